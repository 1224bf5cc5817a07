//! `dlq_repeats BROKERS TOPIC`: reads every partition of the dead-letter topic `TOPIC` from the
//! beginning up to its high watermark and prints `letters=N distinct=D repeats=R`, where a
//! repeat is a letter whose key (`partition:offset` of the source record) was already seen.
//! With `DLQ_DUMP=1`, every letter is printed to stderr as `key reason payload`.
//! Each repeated key is also printed to stderr with its `eddy-reason` header.
//! Used by `scripts/chaos` to count dead letters written twice across crashes and outages.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, topic] = args.as_slice() else {
        eprintln!("usage: dlq_repeats BROKERS TOPIC");
        std::process::exit(2);
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "dlq-repeats-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a kafka consumer");
    let timeout = Duration::from_secs(10);
    // A broker just restarted can take tens of seconds to answer: ask again until 2 minutes.
    let meta = retry("topic metadata", || {
        consumer.fetch_metadata(Some(topic), timeout)
    });
    let partitions: Vec<i32> = meta
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    // Partition -> high watermark still to reach.
    let mut pending: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = retry("watermarks", || {
            consumer.fetch_watermarks(topic, p, timeout)
        });
        if high > low {
            pending.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("a partition list");
        }
    }
    let mut keys: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut letters = 0u64;
    if !pending.is_empty() {
        consumer.assign(&tpl).expect("partitions assigned");
    }
    let dump = std::env::var("DLQ_DUMP").is_ok_and(|v| v == "1");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            letters += 1;
            let seen = keys
                .entry(m.key().unwrap_or_default().to_vec())
                .or_default();
            *seen += 1;
            if dump {
                eprintln!(
                    "{} {} {}",
                    String::from_utf8_lossy(m.key().unwrap_or_default()),
                    reason_of(&m).unwrap_or_default(),
                    String::from_utf8_lossy(m.payload().unwrap_or_default())
                );
            }
            if *seen > 1 {
                let reason = reason_of(&m);
                eprintln!(
                    "repeat: key {} (seen {} times), reason {:?}, at {}:{}",
                    String::from_utf8_lossy(m.key().unwrap_or_default()),
                    *seen,
                    reason,
                    m.partition(),
                    m.offset()
                );
            }
            if pending
                .get(&m.partition())
                .is_some_and(|&h| m.offset() + 1 >= h)
            {
                pending.remove(&m.partition());
            }
        }
    }
    if !pending.is_empty() {
        eprintln!("dlq_repeats: partitions not read to the end: {pending:?}");
        std::process::exit(1);
    }
    let distinct = keys.len() as u64;
    println!(
        "letters={letters} distinct={distinct} repeats={}",
        letters - distinct
    );
}

/// The `eddy-reason` header of a dead letter.
fn reason_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Option<String> {
    m.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == "eddy-reason")
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// Calls `f` until it succeeds, for up to 2 minutes (each failure on stderr); exits with the
/// last error after that.
fn retry<T>(what: &str, mut f: impl FnMut() -> Result<T, rdkafka::error::KafkaError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("dlq_repeats: {what}: {e}; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => {
                eprintln!("dlq_repeats: {what}: {e}; giving up");
                std::process::exit(1);
            }
        }
    }
}
