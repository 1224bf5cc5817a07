//! Where records come from: a partitioned, offset-addressed log (Kafka, or the demo generator).

/// One record of a partition.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Message bytes (empty for a tombstone).
    pub payload: &'a [u8],
    /// The record's Kafka timestamp, ms (its producer's create time, or the broker's append
    /// time), when it has one: fixed per record, unlike the wall clock when it is read.
    pub timestamp_ms: Option<i64>,
}

/// A reader of the partitions one worker owns.
pub trait PartitionReader: 'static {
    /// Error type.
    type Error: std::fmt::Display;
    /// The partitions this reader owns.
    fn partitions(&self) -> Vec<i32>;
    /// Offset reading starts at in `partition`.
    fn start_offset(&self, partition: i32) -> i64;
    /// Hands up to `max` records available now to `f` without blocking for long; returns how
    /// many were handed over.
    fn poll(&mut self, max: usize, f: &mut dyn FnMut(Record<'_>)) -> Result<usize, Self::Error>;
    /// Stops fetching `partition` (a bounded replay has read all it needs of it). Default:
    /// nothing (the reader keeps fetching; the records past the end are dropped by the caller).
    fn pause(&mut self, partition: i32) {
        let _ = partition;
    }
    /// True when the reader has caught up with the end of `partition`.
    fn at_end(&self, partition: i32) -> bool;
    /// True when `error` (from [`PartitionReader::poll`]) cannot be retried: the source stops
    /// the run (its worker fails with the error) instead of retrying. Default: never.
    fn is_fatal(error: &Self::Error) -> bool {
        let _ = error;
        false
    }
}
