//! `EpochStash`: data held per epoch, with a capability, until the operator may process it.
//!
//! The building block of every frontier-driven operator in eddy: stash what arrives under each
//! epoch, then pop epochs in order once the frontier says they are complete.

use crate::Epoch;
use std::collections::BTreeMap;
use timely::dataflow::operators::{Capability, InputCapability};

/// Data received per epoch, each epoch with a capability on output 0.
///
/// ```
/// use eddy_operators::EpochStash;
/// use timely::dataflow::channels::pact::Pipeline;
/// use timely::dataflow::operators::{Capture, Operator, ToStream, capture::Extract};
///
/// let captured = timely::example(|scope| {
///     (0..6u64)
///         .to_stream(scope)
///         .unary_frontier(Pipeline, "SumWhenComplete", |_cap, _info| {
///             let mut stash = EpochStash::default();
///             move |(input, frontier), output| {
///                 input.for_each(|cap, data| stash.absorb(cap, data));
///                 while let Some((cap, data)) = stash.pop_if(|t| !frontier.less_equal(t)) {
///                     output.session(&cap).give(data.iter().sum::<u64>());
///                 }
///             }
///         })
///         .capture()
/// });
/// assert_eq!(captured.extract(), vec![(0, vec![15])]);
/// ```
pub struct EpochStash<D> {
    pending: BTreeMap<Epoch, (Capability<Epoch>, Vec<D>)>,
}

impl<D> Default for EpochStash<D> {
    fn default() -> Self {
        Self {
            pending: BTreeMap::new(),
        }
    }
}

impl<D> EpochStash<D> {
    /// Takes the contents of one received message (leaving `data` empty).
    pub fn absorb(&mut self, cap: InputCapability<Epoch>, data: &mut Vec<D>) {
        let time = *cap.least().expect("a message has a time");
        self.pending
            .entry(time)
            .or_insert_with(|| {
                (
                    cap.retain_least(0).expect("a message has a time"),
                    Vec::new(),
                )
            })
            .1
            .append(data);
    }

    /// Removes and returns the earliest epoch if `ready` holds for it.
    pub fn pop_if(
        &mut self,
        ready: impl Fn(&Epoch) -> bool,
    ) -> Option<(Capability<Epoch>, Vec<D>)> {
        let (&time, _) = self.pending.first_key_value()?;
        if !ready(&time) {
            return None;
        }
        self.pending.pop_first().map(|(_, held)| held)
    }

    /// The earliest epoch held, if any.
    pub fn first_epoch(&self) -> Option<Epoch> {
        self.pending.first_key_value().map(|(t, _)| *t)
    }

    /// The latest epoch held, if any.
    pub fn last_epoch(&self) -> Option<Epoch> {
        self.pending.last_key_value().map(|(t, _)| *t)
    }
}

impl<X, R> EpochStash<(X, R)> {
    /// Takes the differential updates `(data, time, diff)` of one received message (leaving
    /// `data` empty), each under its own time as a `(data, diff)` pair: a message of a
    /// differential collection may carry updates at times later than its capability.
    pub fn absorb_updates(&mut self, cap: InputCapability<Epoch>, data: &mut Vec<(X, Epoch, R)>) {
        for (x, time, r) in data.drain(..) {
            self.pending
                .entry(time)
                .or_insert_with(|| (cap.delayed(&time, 0), Vec::new()))
                .1
                .push((x, r));
        }
    }
}
