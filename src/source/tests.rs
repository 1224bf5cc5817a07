//! The source operator's tests: validation, lateness, replay and the future bound.
use super::*;
use eddy_operators::{TrackWatermark, WatermarkPolicy};
use std::cell::RefCell;
use std::rc::Rc;
use timely::dataflow::operators::{Input, Inspect, Probe};

/// One partition whose records the test appends while the dataflow runs.
struct VecReader {
    records: Rc<RefCell<Vec<Vec<u8>>>>,
    next: usize,
}

impl PartitionReader for VecReader {
    type Error = std::convert::Infallible;
    fn partitions(&self) -> Vec<i32> {
        vec![0]
    }
    fn start_offset(&self, _: i32) -> i64 {
        0
    }
    fn poll(&mut self, max: usize, f: &mut dyn FnMut(Record<'_>)) -> Result<usize, Self::Error> {
        let records = self.records.borrow();
        let mut n = 0;
        while n < max && self.next < records.len() {
            f(Record {
                partition: 0,
                offset: self.next as i64,
                payload: &records[self.next],
                timestamp_ms: None,
            });
            self.next += 1;
            n += 1;
        }
        Ok(n)
    }
    fn at_end(&self, _: i32) -> bool {
        self.next == self.records.borrow().len()
    }
}

/// The source under test: nothing durable to wait for, metrics of its own.
fn test_source<'scope, R: PartitionReader>(
    scope: Scope<'scope, Epoch>,
    reader: R,
    settings: SourceSettings,
    watermark: WatermarkHandle,
) -> SourceStreams<'scope> {
    source(
        scope,
        reader,
        settings,
        watermark,
        Backpressure::new(),
        Metrics::new(),
    )
}

/// 2026-01-01T00:00:00Z, the fake wall clock.
const NOW: i64 = 1_767_225_600_000;

/// Settings of a test source: `window`, `lateness_ms`, `retain_ms`; 1 ms epochs of up to 1 000
/// records, partitions idle after an hour, no restore, a future bound of 1 min, the clock at
/// [`NOW`].
fn settings(window: WindowSpec, lateness_ms: i64, retain_ms: i64) -> SourceSettings {
    SourceSettings {
        window,
        lateness_ms,
        retain_ms,
        epoch: Duration::from_millis(1),
        max_records_per_epoch: 1_000,
        max_inflight_epochs: 1_000,
        max_lagging_epochs: 1_000,
        max_lagging_records: usize::MAX,
        idle_timeout: Duration::from_secs(3_600),
        restore: None,
        replay_history: true,
        late_before_restore: Default::default(),
        max_future_ms: 60_000,
        clock: WallClock::from_fn(|| NOW),
    }
}

/// The watermark policy matching [`settings`] over `partitions`, from `floor_ms`.
fn policy(
    window: WindowSpec,
    lateness_ms: i64,
    retain_ms: i64,
    partitions: Vec<i32>,
    floor_ms: i64,
) -> WatermarkPolicy {
    WatermarkPolicy {
        window,
        retain_ms,
        lateness_ms,
        partitions,
        floor_ms,
        catch_up_to: Default::default(),
        replay_to: Default::default(),
    }
}

fn view(i: i64, ts: i64) -> Vec<u8> {
    format!(r#"{{"event_id":"e{i}","ts":{ts},"user_id":{i},"campaign_id":1,"event_type":"view"}}"#)
        .into_bytes()
}

/// Feeds one event dated 2090, lets the partition go idle (idle timeout 0: the all-idle
/// watermark is the largest event time seen), then 20 events of the current minute.
/// Returns the offsets counted and the dead letters' `(offset, reason)`.
fn run(max_future_ms: i64) -> (Vec<i64>, Vec<(i64, String)>) {
    timely::execute_directly(move |worker| {
        let records = Rc::new(RefCell::new(vec![view(0, 3_786_825_600_000)]));
        let reader = VecReader {
            records: records.clone(),
            next: 0,
        };
        let counted = Rc::new(RefCell::new(Vec::new()));
        let letters = Rc::new(RefCell::new(Vec::new()));
        let watermark = WatermarkHandle::new(i64::MIN);
        let window = WindowSpec::new(60_000);
        let settings = SourceSettings {
            idle_timeout: Duration::ZERO,
            max_future_ms,
            ..settings(window, 5_000, 60_000)
        };
        let policy = policy(window, 5_000, 60_000, vec![0], i64::MIN);
        let first_windows = Rc::new(RefCell::new(Vec::new()));
        let f = first_windows.clone();
        let (c, l, w) = (counted.clone(), letters.clone(), watermark.clone());
        worker.dataflow::<Epoch, _, _>(move |scope| {
            let src = test_source(scope, reader, settings, w.clone());
            let windows = f.clone();
            src.progress
                .inspect(move |p| {
                    windows
                        .borrow_mut()
                        .extend(p.first_offsets.iter().map(|&(start, _)| start))
                })
                .track_watermark(policy, w);
            src.events.inner.inspect(move |(e, _, _)| {
                c.borrow_mut().push(e.user_id as i64);
            });
            src.dead_letters.inspect(move |d| {
                l.borrow_mut().push((d.offset, d.reason.clone()));
            });
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut step_until = |what: &str, done: &dyn Fn() -> bool| {
            while !done() {
                assert!(Instant::now() < deadline, "timed out: {what}");
                worker.step();
            }
        };
        // The 2090 event is read, and several epochs pass with the partition idle.
        step_until("the first record read and epoch 10", &|| {
            counted.borrow().len() + letters.borrow().len() == 1
                && watermark.watermark_at(10).is_some()
        });
        records
            .borrow_mut()
            .extend((1..=20).map(|i| view(i, NOW - 30_000 + i * 100)));
        step_until("every record read", &|| {
            counted.borrow().len() + letters.borrow().len() == 21
        });
        assert!(
            watermark.latest() <= NOW + max_future_ms,
            "the watermark never runs ahead of the wall clock + max_future_ms"
        );
        assert!(
            first_windows
                .borrow()
                .iter()
                .all(|&start| start <= NOW + max_future_ms),
            "no future window holds the resume offset: {:?}",
            first_windows.borrow()
        );
        let mut counted = counted.borrow().clone();
        counted.sort();
        let letters = letters.borrow().clone();
        // The source never completes: drop the dataflow, or timely steps it forever.
        for id in worker.installed_dataflows() {
            worker.drop_dataflow(id);
        }
        (counted, letters)
    })
}

#[test]
fn an_event_from_the_future_is_bad_ts_and_later_events_count() {
    let (counted, letters) = run(300_000);
    assert_eq!(letters, vec![(0, "bad_ts".to_owned())]);
    assert_eq!(
        counted,
        (1..=20).collect::<Vec<_>>(),
        "every current event counted"
    );
}

/// A reader whose partitions changed under it.
struct ChangedReader;

impl PartitionReader for ChangedReader {
    type Error = String;
    fn partitions(&self) -> Vec<i32> {
        vec![0]
    }
    fn start_offset(&self, _: i32) -> i64 {
        0
    }
    fn poll(&mut self, _: usize, _: &mut dyn FnMut(Record<'_>)) -> Result<usize, String> {
        Err("partitions changed".into())
    }
    fn at_end(&self, _: i32) -> bool {
        false
    }
    fn is_fatal(_: &String) -> bool {
        true
    }
}

#[test]
fn a_fatal_read_error_fails_the_worker() {
    let message = timely::execute_directly(|worker| {
        worker.dataflow::<Epoch, _, _>(|scope| {
            let settings = SourceSettings {
                max_records_per_epoch: 10,
                max_inflight_epochs: 10,
                max_lagging_epochs: 10,
                max_lagging_records: 100,
                idle_timeout: Duration::ZERO,
                max_future_ms: 0,
                ..settings(WindowSpec::new(1_000), 0, 1_000)
            };
            let watermark = WatermarkHandle::new(i64::MIN);
            test_source(scope, ChangedReader, settings, watermark);
        });
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for _ in 0..1_000 {
                worker.step();
            }
        }))
        .expect_err("the source stops instead of retrying forever");
        for id in worker.installed_dataflows() {
            worker.drop_dataflow(id);
        }
        panic.downcast_ref::<String>().cloned().unwrap_or_default()
    });
    assert_eq!(message, "source cannot continue: partitions changed");
}

/// Partitions with fixed records, read round robin one record at a time.
struct Partitions {
    records: Vec<Vec<Vec<u8>>>,
    next: Vec<usize>,
}

impl PartitionReader for Partitions {
    type Error = std::convert::Infallible;
    fn partitions(&self) -> Vec<i32> {
        (0..self.records.len() as i32).collect()
    }
    fn start_offset(&self, _: i32) -> i64 {
        0
    }
    fn poll(&mut self, max: usize, f: &mut dyn FnMut(Record<'_>)) -> Result<usize, Self::Error> {
        let mut n = 0;
        while n < max {
            let before = n;
            for (p, records) in self.records.iter().enumerate() {
                if n < max && self.next[p] < records.len() {
                    f(Record {
                        partition: p as i32,
                        offset: self.next[p] as i64,
                        payload: &records[self.next[p]],
                        timestamp_ms: None,
                    });
                    self.next[p] += 1;
                    n += 1;
                }
            }
            if n == before {
                break;
            }
        }
        Ok(n)
    }
    fn at_end(&self, p: i32) -> bool {
        self.next[p as usize] == self.records[p as usize].len()
    }
}

/// Reads `records` (per partition) with at most `per_epoch` records per epoch, 1 s windows
/// and 2 s lateness; returns the `(partition, offset)` of the late letters.
fn late_letters(records: Vec<Vec<Vec<u8>>>, per_epoch: usize) -> Vec<(i32, i64)> {
    let total: usize = records.iter().map(Vec::len).sum();
    let partitions: Vec<i32> = (0..records.len() as i32).collect();
    timely::execute_directly(move |worker| {
        let next = vec![0; records.len()];
        let reader = Partitions { records, next };
        let window = WindowSpec::new(1_000);
        let settings = SourceSettings {
            epoch: Duration::from_secs(60),
            max_records_per_epoch: per_epoch,
            max_inflight_epochs: 1_000_000,
            ..settings(window, 2_000, 1_000)
        };
        let policy = policy(window, 2_000, 1_000, partitions, i64::MIN);
        let seen = Rc::new(RefCell::new(0usize));
        let late = Rc::new(RefCell::new(Vec::new()));
        let (s1, s2, l) = (seen.clone(), seen.clone(), late.clone());
        let watermark = WatermarkHandle::new(i64::MIN);
        worker.dataflow::<Epoch, _, _>(move |scope| {
            let src = test_source(scope, reader, settings, watermark.clone());
            src.progress.track_watermark(policy, watermark);
            src.events.inner.inspect(move |_| *s1.borrow_mut() += 1);
            src.dead_letters.inspect(move |d| {
                *s2.borrow_mut() += 1;
                assert_eq!(d.reason, "late");
                l.borrow_mut().push((d.partition, d.offset));
            });
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while *seen.borrow() < total {
            assert!(Instant::now() < deadline, "timed out reading");
            worker.step();
        }
        for id in worker.installed_dataflows() {
            worker.drop_dataflow(id);
        }
        let mut late = late.borrow().clone();
        late.sort();
        late
    })
}

#[test]
fn lateness_depends_on_the_partitions_records_only_not_on_batching() {
    let t0 = NOW - 600_000;
    // Partition 0 runs ahead of partition 1, whose slow pace holds the global watermark back.
    // Its offset 2 (3.5 s behind its partition's latest event, lateness 2 s) is late by its
    // partition's own watermark, whatever the global watermark was when it was read; offset 3
    // (1.5 s behind) is on time.
    let p0 = vec![
        view(0, t0 + 10_000),
        view(1, t0 + 10_500),
        view(2, t0 + 7_000),
        view(3, t0 + 9_000),
        view(4, t0 + 12_000),
    ];
    let slow = (0..5)
        .map(|i| view(10 + i, t0 + i * 100))
        .collect::<Vec<_>>();
    // A partition as fast as partition 0: the global watermark alone would make offset 2
    // late when read in a later epoch than the records before it, on time in the same one.
    let fast = (0..5)
        .map(|i| view(20 + i, t0 + 10_000 + i * 100))
        .collect::<Vec<_>>();
    // Every record in one epoch (the global watermark unknown throughout), one record per
    // epoch, and in between: the same decisions.
    for other in [slow, fast] {
        for per_epoch in [1_000, 1, 3] {
            assert_eq!(
                late_letters(vec![p0.clone(), other.clone()], per_epoch),
                vec![(0, 2)],
                "{per_epoch} records per epoch"
            );
        }
    }
}

/// What a restarted source emitted: user ids of the events counted and of the `history`, and
/// the offsets of its dead letters.
#[derive(Debug, Default)]
struct Restarted {
    counted: Vec<i64>,
    history: Vec<i64>,
    letters: Vec<i64>,
}

/// Runs a source over one partition of `records` restored from a checkpoint (watermark `wm`,
/// resume offset 0, high offset `high`; 1-minute windows, 5 s lateness, 10-minute retention)
/// with the letters `late` read back, until `done` holds and 100 steps more.
fn restarted(
    records: Vec<Vec<u8>>,
    wm: i64,
    high: i64,
    late: &[(i32, i64)],
    replay_history: bool,
    done: impl Fn(&Restarted) -> bool + Send + Sync + 'static,
) -> Restarted {
    let late: HashSet<(i32, i64)> = late.iter().copied().collect();
    timely::execute_directly(move |worker| {
        let window = WindowSpec::new(60_000);
        let reader = VecReader {
            records: Rc::new(RefCell::new(records)),
            next: 0,
        };
        let restore = Checkpoint {
            state: None,
            topic: "events".into(),
            epoch: 9,
            watermark_ms: wm,
            partitions: vec![eddy_core::PartitionCheckpoint {
                partition: 0,
                resume_offset: 0,
                high_offset: high,
            }],
        };
        let settings = SourceSettings {
            restore: Some(restore),
            replay_history,
            late_before_restore: Arc::new(late),
            ..settings(window, 5_000, 600_000)
        };
        let out = Rc::new(RefCell::new(Restarted::default()));
        let (o1, o2, o3) = (out.clone(), out.clone(), out.clone());
        let watermark = WatermarkHandle::new(wm);
        worker.dataflow::<Epoch, _, _>(move |scope| {
            let src = test_source(scope, reader, settings, watermark.clone());
            let policy = policy(window, 5_000, 600_000, vec![0], wm);
            src.progress.track_watermark(policy, watermark);
            src.events.inner.inspect(move |(e, _, _)| {
                o1.borrow_mut().counted.push(e.user_id as i64);
            });
            src.history.inner.inspect(move |(e, _, _)| {
                o2.borrow_mut().history.push(e.user_id as i64);
            });
            src.dead_letters
                .inspect(move |d| o3.borrow_mut().letters.push(d.offset));
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(&out.borrow()) {
            assert!(Instant::now() < deadline, "timed out: {:?}", out.borrow());
            worker.step();
        }
        for _ in 0..100 {
            worker.step();
        }
        // The source never completes on its own.
        for id in worker.installed_dataflows() {
            worker.drop_dataflow(id);
        }
        out.take()
    })
}

/// After a restart, a replayed record of a window already final goes to `history` (it rebuilds
/// sliding-window state), except one that was dead-lettered as `late` before the restart: it
/// was never counted, so replaying it must not count it now.
#[test]
fn replayed_records_late_before_the_restart_stay_out_of_history() {
    // Four records of the window [NOW - 120 s, NOW - 60 s), final at the restored watermark;
    // offset 1 was late before the restart.
    let start = NOW - 120_000;
    let records = (0..4).map(|i| view(i, start + i * 1_000)).collect();
    let out = restarted(records, NOW, 4, &[(0, 1)], true, |o| o.history.len() >= 3);
    assert_eq!(out.history, vec![0, 2, 3]);
    assert!(out.counted.is_empty() && out.letters.is_empty(), "{out:?}");
}

/// A record ruled late before a crash (its partition had been idle and met a watermark ahead
/// of its own) is read again after the restart, above the checkpoint's high offset: it is
/// late again, whatever the watermark it meets now, and not sent again.
#[test]
fn records_late_before_the_restart_are_late_again_after_it() {
    let start = NOW - 300_000;
    let records = (0..4).map(|i| view(i, start + i * 1_000)).collect();
    let out = restarted(records, start - 600_000, 2, &[(0, 3)], false, |o| {
        o.counted.len() >= 3
    });
    assert_eq!(out.counted, vec![0, 1, 2]);
    assert!(out.letters.is_empty(), "not sent again: {out:?}");
}

/// Two records stamped by the broker long ago, read now: the future bound is measured from
/// each record's Kafka timestamp, not from the wall clock at reading (so a restart or a replay,
/// reading later, decides as the first read did).
#[test]
fn the_future_bound_is_measured_from_the_records_kafka_timestamp() {
    struct Stamped(Vec<(Vec<u8>, i64)>, usize);
    impl PartitionReader for Stamped {
        type Error = std::convert::Infallible;
        fn partitions(&self) -> Vec<i32> {
            vec![0]
        }
        fn start_offset(&self, _: i32) -> i64 {
            0
        }
        fn poll(
            &mut self,
            max: usize,
            f: &mut dyn FnMut(Record<'_>),
        ) -> Result<usize, Self::Error> {
            let mut n = 0;
            while n < max && self.1 < self.0.len() {
                let (payload, ts) = &self.0[self.1];
                f(Record {
                    partition: 0,
                    offset: self.1 as i64,
                    payload,
                    timestamp_ms: Some(*ts),
                });
                self.1 += 1;
                n += 1;
            }
            Ok(n)
        }
        fn at_end(&self, _: i32) -> bool {
            self.1 == self.0.len()
        }
    }
    // Produced an hour ago; offset 0 dated 1 min after that (accepted), offset 1 dated 10 min
    // after it (bad_ts, although the wall clock is far past both now).
    let produced = NOW - 3_600_000;
    let records = vec![
        (view(0, produced + 60_000), produced),
        (view(1, produced + 600_000), produced),
    ];
    let (counted, letters) = timely::execute_directly(move |worker| {
        let window = WindowSpec::new(60_000);
        let settings = SourceSettings {
            max_future_ms: 300_000,
            ..settings(window, 5_000, 60_000)
        };
        let counted = Rc::new(RefCell::new(Vec::new()));
        let letters = Rc::new(RefCell::new(Vec::new()));
        let (c, l) = (counted.clone(), letters.clone());
        worker.dataflow::<Epoch, _, _>(move |scope| {
            let src = test_source(
                scope,
                Stamped(records, 0),
                settings,
                WatermarkHandle::new(i64::MIN),
            );
            src.events.inner.inspect(move |(e, _, _)| {
                c.borrow_mut().push(e.user_id as i64);
            });
            src.dead_letters
                .inspect(move |d| l.borrow_mut().push((d.offset, d.reason.clone())));
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while counted.borrow().len() + letters.borrow().len() < 2 {
            assert!(Instant::now() < deadline, "timed out reading");
            worker.step();
        }
        for id in worker.installed_dataflows() {
            worker.drop_dataflow(id);
        }
        (counted.borrow().clone(), letters.borrow().clone())
    });
    assert_eq!(counted, vec![0]);
    assert_eq!(letters, vec![(1, "bad_ts".to_string())]);
}

/// Reads one record per epoch with `max_inflight_epochs` 3, `max_lagging_epochs` 10 and
/// `max_lagging_records` as given while the durable probe is held (its stream's input never
/// advances), and the fresh one too unless `fresh_follows` (then it follows the events as the
/// source emits them). Returns the records read once 200 epochs have passed, and the records
/// read once the durable probe is released.
fn read_while_held(fresh_follows: bool, max_lagging_records: usize) -> (usize, usize) {
    timely::execute_directly(move |worker| {
        let records = Rc::new(RefCell::new(
            (0..1_000).map(|i| view(i, NOW - 30_000)).collect(),
        ));
        let reader = VecReader { records, next: 0 };
        let window = WindowSpec::new(60_000);
        let settings = SourceSettings {
            epoch: Duration::ZERO,
            max_records_per_epoch: 1,
            max_inflight_epochs: 3,
            max_lagging_epochs: 10,
            max_lagging_records,
            ..settings(window, 5_000, 60_000)
        };
        let policy = policy(window, 5_000, 60_000, vec![0], i64::MIN);
        let watermark = WatermarkHandle::new(i64::MIN);
        let read = Rc::new(RefCell::new(0usize));
        let (r, w) = (read.clone(), watermark.clone());
        let (mut held_durable, held_fresh) = worker.dataflow::<Epoch, _, _>(move |scope| {
            let backpressure = Backpressure::new();
            let src = source(
                scope,
                reader,
                settings,
                w.clone(),
                backpressure.clone(),
                Metrics::new(),
            );
            src.progress.track_watermark(policy, w);
            let events = src.events.inner.inspect(move |_| *r.borrow_mut() += 1);
            let (durable, stream) = scope.new_input::<Vec<()>>();
            stream.probe_with(&backpressure.durable);
            let (fresh, stream) = scope.new_input::<Vec<()>>();
            if fresh_follows {
                events.probe_with(&backpressure.fresh);
            } else {
                stream.probe_with(&backpressure.fresh);
            }
            (Some(durable), fresh)
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while watermark.watermark_at(200).is_none() {
            assert!(Instant::now() < deadline, "timed out waiting for epoch 200");
            worker.step();
        }
        let while_held = *read.borrow();
        // Released: the held epochs become durable and reading goes on.
        held_durable.take();
        if fresh_follows {
            while *read.borrow() < 1_000 {
                assert!(Instant::now() < deadline, "timed out reading on");
                worker.step();
            }
        }
        let after = *read.borrow();
        drop(held_fresh);
        for id in worker.installed_dataflows() {
            worker.drop_dataflow(id);
        }
        (while_held, after)
    })
}

#[test]
fn the_lagging_lane_trails_by_max_lagging_epochs_and_the_fresh_lane_by_max_inflight() {
    // The fresh lane keeps up: reading pauses only when 10 epochs wait for the durable one.
    let (held, after) = read_while_held(true, 1_000);
    assert_eq!(held, 10, "the lagging lane may trail by max_lagging_epochs");
    assert_eq!(after, 1_000, "released, every record is read");
    // ... or by fewer epochs when they hold max_lagging_records records.
    let (held, _) = read_while_held(true, 7);
    assert_eq!(
        held, 7,
        "the lagging lane holds at most max_lagging_records"
    );
    // Both lanes held: the fresh lane's bound, 3 epochs, stops reading first.
    let (held, _) = read_while_held(false, 1_000);
    assert_eq!(held, 3, "the fresh lane may trail by max_inflight_epochs");
}
