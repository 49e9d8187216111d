//! `articles`: the catalogue entry of every registered article (name and its
//! lower-case fold, category, unit, reorder point, discontinued). Written by
//! the projector from each article's folded state; read by the catalogue,
//! and to tell an unknown article (404) from one without rows yet.

use serde::Serialize;
use sqlx::{PgExecutor, Postgres, QueryBuilder};

use super::Query;

/// A row of `articles` as the projector writes it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ArticleRow {
    pub article_id: String,
    pub name: String,
    pub category: String,
    pub unit_code: String,
    pub unit_decimals: i16,
    pub reorder_point: Option<i64>,
    pub discontinued: bool,
}

/// The writer's statements of one generation.
#[derive(Debug, Clone)]
pub struct Statements {
    load: String,
    upsert: String,
}

impl Statements {
    pub fn new(s: &str) -> Self {
        Self {
            load: format!(
                "select article_id, name, category, unit_code, unit_decimals, reorder_point, discontinued
                 from {s}.articles where article_id = any($1)"
            ),
            upsert: format!(
                "insert into {s}.articles (article_id, name, name_fold, category, unit_code, unit_decimals,
                                           reorder_point, discontinued)
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int2[],
                                      $7::int8[], $8::bool[])
                 on conflict (article_id) do update set name = excluded.name, name_fold = excluded.name_fold,
                     category = excluded.category, unit_code = excluded.unit_code,
                     unit_decimals = excluded.unit_decimals, reorder_point = excluded.reorder_point,
                     discontinued = excluded.discontinued"
            ),
        }
    }

    pub fn all(&self) -> Vec<(&'static str, &str)> {
        vec![("load_articles", &self.load), ("upsert_articles", &self.upsert)]
    }
}

/// The stored rows of `articles` (ids without the `article:` prefix).
pub fn load<'q>(sql: &'q Statements, articles: &'q [&'q str]) -> sqlx::query::QueryAs<'q, Postgres, ArticleRow, sqlx::postgres::PgArguments> {
    sqlx::query_as(&sql.load).bind(articles)
}

/// Inserts or replaces `rows`.
pub fn upsert<'q>(sql: &'q Statements, rows: &[&'q ArticleRow]) -> Query<'q> {
    sqlx::query(&sql.upsert)
        .bind(rows.iter().map(|a| a.article_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.name.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.name.to_lowercase()).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.category.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.unit_code.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.unit_decimals).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.reorder_point).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.discontinued).collect::<Vec<_>>())
}

/// Whether `article` is registered.
pub async fn exists<'c>(db: impl PgExecutor<'c>, schema: &str, article: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&exists_sql(schema)).bind(article).fetch_one(db).await
}

fn exists_sql(s: &str) -> String {
    format!("select exists (select 1 from {s}.articles where article_id = $1)")
}

/// An article as the catalogue lists it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct CatalogueItem {
    pub article: String,
    pub name: String,
    pub category: String,
    #[sqlx(skip)]
    pub unit: serde_json::Value,
    #[serde(skip)]
    pub unit_code: String,
    #[serde(skip)]
    pub unit_decimals: i16,
    pub reorder_point: Option<i64>,
    pub discontinued: bool,
    /// The sort key with the id: what a page's cursor carries.
    #[serde(skip)]
    pub name_fold: String,
}

/// What the catalogue is asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogueFilter {
    pub category: Option<String>,
    /// Lower-case start of the name.
    pub name_prefix: Option<String>,
}

/// The catalogue by lower-case name and id, after `after` (the last item of
/// the previous page), at most `limit` items.
pub async fn catalogue<'c>(
    db: impl PgExecutor<'c>,
    schema: &str,
    filter: &CatalogueFilter,
    after: Option<(String, String)>,
    limit: i64,
) -> Result<Vec<CatalogueItem>, sqlx::Error> {
    let rows: Vec<CatalogueItem> = catalogue_query(schema, filter, after, limit).build_query_as().fetch_all(db).await?;
    Ok(rows
        .into_iter()
        .map(|mut r| {
            r.unit = serde_json::json!({ "code": r.unit_code, "decimals": r.unit_decimals });
            r
        })
        .collect())
}

fn catalogue_query(schema: &str, filter: &CatalogueFilter, after: Option<(String, String)>, limit: i64) -> QueryBuilder<'static, Postgres> {
    let mut q = QueryBuilder::new(format!(
        "select article_id as article, name, category, unit_code, unit_decimals, reorder_point, \
         discontinued, name_fold from {schema}.articles where true"
    ));
    if let Some(category) = &filter.category {
        q.push(" and category = ").push_bind(category.clone());
    }
    if let Some(prefix) = &filter.name_prefix {
        q.push(" and name_fold like ").push_bind(format!("{}%", escape_like(prefix)));
    }
    if let Some((name, id)) = after {
        q.push(" and (name_fold, article_id) > (").push_bind(name).push(", ").push_bind(id).push(")");
    }
    q.push(" order by name_fold, article_id limit ").push_bind(limit);
    q
}

/// `%`, `_` and `\` match themselves in a LIKE pattern.
fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// Every reader's statement (each variant of the catalogue), named, for `tests/schema.rs`.
pub fn readers(s: &str) -> Vec<(&'static str, String)> {
    let mut all = vec![("article_exists", exists_sql(s))];
    for category in [None, Some("c".to_owned())] {
        for name_prefix in [None, Some("n".to_owned())] {
            for after in [None, Some(("n".to_owned(), "A".to_owned()))] {
                let filter = CatalogueFilter { category: category.clone(), name_prefix: name_prefix.clone() };
                all.push(("catalogue", catalogue_query(s, &filter, after, 1).sql().to_owned()));
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::escape_like;

    #[test]
    fn like_wildcards_in_a_prefix_match_themselves() {
        assert_eq!(escape_like(r"50%_a\b"), r"50\%\_a\\b");
    }
}
