//! The services' PostgreSQL sessions: what `platform::db` sets on each.

use testkit::TestEnv;

const COSTLY: &str = "explain select sum(a * b) from generate_series(1, 10000000) a, generate_series(1, 100) b";

#[tokio::test]
async fn sessions_run_without_the_jit_compiler() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let pool = env.pool().await?;
    let mut conn = pool.acquire().await?;
    let jit: String = sqlx::query_scalar("show jit").fetch_one(&mut *conn).await?;
    assert_eq!(jit, "off");
    let plan: Vec<String> = sqlx::query_scalar(COSTLY).fetch_all(&mut *conn).await?;
    assert!(!plan.iter().any(|line| line.contains("JIT")), "{plan:#?}");
    // Where the server can compile, the same statement would be: the check above can fail.
    if sqlx::query_scalar::<_, bool>("select pg_jit_available()").fetch_one(&mut *conn).await? {
        sqlx::query("set jit = on").execute(&mut *conn).await?;
        let plan: Vec<String> = sqlx::query_scalar(COSTLY).fetch_all(&mut *conn).await?;
        sqlx::query("reset jit").execute(&mut *conn).await?;
        assert!(plan.iter().any(|line| line.contains("JIT")), "{plan:#?}");
    }
    Ok(())
}
