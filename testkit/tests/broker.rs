//! The test broker itself must keep what it acknowledges: records produced
//! together travel in one batch, and each must be stored and read back.
//! (Tansu 0.6.0's memory engine fails this, which is why tests use SQLite.)

use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test(flavor = "multi_thread")]
async fn twelve_records_produced_at_once_are_all_read_back_in_order() -> anyhow::Result<()> {
    let env = testkit::TestEnv::new(3).await?;
    let producer: FutureProducer = env.kafka.client_config().set("linger.ms", "5").create()?;
    let mut deliveries = Vec::new();
    for i in 0..12 {
        let payload = format!("m{i}");
        let record = FutureRecord::to(&env.kafka.events_topic).key("same-key").payload(&payload);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for delivery in deliveries {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    let records = testkit::read_topic(&env.kafka, &env.kafka.events_topic).await?;
    let payloads: Vec<String> = records.iter().map(|r| String::from_utf8_lossy(&r.payload).into_owned()).collect();
    assert_eq!(payloads, (0..12).map(|i| format!("m{i}")).collect::<Vec<_>>());
    Ok(())
}
