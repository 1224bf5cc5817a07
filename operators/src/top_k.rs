//! `top_k_total`: per key, the `k` least values of a collection, maintained incrementally.
//!
//! Differential's `reduce` recomputes a key's output from *all* of its values whenever any of
//! them changes: for a user with 500 similarity candidates, one changed candidate costs 500
//! reads, and one user's changed set changes a candidate of every user it is paired with. With
//! a totally ordered time (eddy's [`Epoch`]) that is not needed: this operator keeps, per key,
//! its values in a `BTreeMap` and, once the frontier passes an epoch, applies the epoch's
//! updates and compares the key's top `k` before and after: O(log n + k) per changed key. It
//! emits a retraction of the old list and the new list only when the top `k` changed.
//!
//! Work is bounded per activation ([`FUEL`] updates, stopping at a key boundary): a large epoch
//! is applied over several activations, holding its capability, so the worker's other
//! operators (the counts of later epochs) run in between instead of waiting for all of it.
//!
//! Values count while their accumulated multiplicity is positive (a value found several times
//! is listed once). Keys with no such value have no row.

use crate::Epoch;
use differential_dataflow::hashable::Hashable;
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};

/// Updates applied per activation before the operator yields (at the next key boundary).
pub const FUEL: usize = 20_000;

/// Per key, the `k` least values (see the module docs).
pub trait TopKTotal<'scope, K, V> {
    /// For each key, the list of its `k` least values in `V`'s order, least first.
    ///
    /// ```
    /// use eddy_operators::TopKTotal;
    /// use differential_dataflow::input::Input;
    ///
    /// timely::execute_directly(|worker| {
    ///     let (mut input, probe, out) = worker.dataflow::<u64, _, _>(|scope| {
    ///         let (input, pairs) = scope.new_collection::<(u32, i64), isize>();
    ///         let out = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    ///         let sink = out.clone();
    ///         let (probe, _) = pairs
    ///             .top_k_total("Top2", 2)
    ///             .inspect(move |x| sink.borrow_mut().push(x.clone()))
    ///             .probe();
    ///         (input, probe, out)
    ///     });
    ///     for v in [5, 3, 9] { input.insert((1, v)); }
    ///     input.advance_to(1);
    ///     input.insert((1, 1));  // enters the top 2
    ///     input.insert((1, 7));  // does not: no output change
    ///     input.advance_to(2);
    ///     input.flush();
    ///     worker.step_while(|| probe.less_than(input.time()));
    ///     let mut got = out.borrow().clone();
    ///     got.sort();
    ///     assert_eq!(got, vec![
    ///         ((1, vec![1, 3]), 1, 1),
    ///         ((1, vec![3, 5]), 0, 1),
    ///         ((1, vec![3, 5]), 1, -1),
    ///     ]);
    /// });
    /// ```
    fn top_k_total(self, name: &str, k: usize) -> VecCollection<'scope, Epoch, (K, Vec<V>), isize>
    where
        Self: Sized,
    {
        self.top_k_total_fueled(name, k, FUEL)
    }

    /// [`TopKTotal::top_k_total`] applying at most about `fuel` updates per activation.
    fn top_k_total_fueled(
        self,
        name: &str,
        k: usize,
        fuel: usize,
    ) -> VecCollection<'scope, Epoch, (K, Vec<V>), isize>;
}

/// The `k` least values with positive multiplicity.
fn top<V: Clone>(values: &BTreeMap<V, isize>, k: usize) -> Vec<V> {
    values
        .iter()
        .filter(|(_, r)| **r > 0)
        .take(k)
        .map(|(v, _)| v.clone())
        .collect()
}

impl<'scope, K, V> TopKTotal<'scope, K, V> for VecCollection<'scope, Epoch, (K, V), isize>
where
    K: ExchangeData + Hash + Ord,
    V: ExchangeData + Ord,
{
    fn top_k_total_fueled(
        self,
        name: &str,
        k: usize,
        fuel_per_activation: usize,
    ) -> VecCollection<'scope, Epoch, (K, Vec<V>), isize> {
        let fuel_per_activation = fuel_per_activation.max(1);
        let exchange = Exchange::new(|((key, _), _, _): &((K, V), Epoch, isize)| key.hashed());
        let scope = self.inner.scope();
        self.inner
            .unary_frontier(exchange, name, move |_cap, info| {
                let activator = scope.activator_for(info.address.clone());
                // Updates by their own time (at or after their message's), each with a
                // capability for it.
                type Pending<K, V> = BTreeMap<Epoch, (Capability<Epoch>, Vec<(K, V, isize)>)>;
                type Current<K, V> = (
                    Capability<Epoch>,
                    std::iter::Peekable<std::vec::IntoIter<(K, V, isize)>>,
                );
                let mut pending: Pending<K, V> = BTreeMap::new();
                // The epoch being applied, when a previous activation ran out of fuel.
                let mut current: Option<Current<K, V>> = None;
                let mut state: HashMap<K, BTreeMap<V, isize>> = HashMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        for ((key, v), t, r) in data.drain(..) {
                            pending
                                .entry(t)
                                .or_insert_with(|| (cap.delayed(&t, 0), Vec::new()))
                                .1
                                .push((key, v, r));
                        }
                    });
                    let mut fuel = fuel_per_activation;
                    loop {
                        if current.is_none() {
                            let Some(entry) = pending.first_entry() else {
                                break;
                            };
                            if frontier.less_equal(entry.key()) {
                                break;
                            }
                            let (cap, mut updates) = entry.remove();
                            updates.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                            current = Some((cap, updates.into_iter().peekable()));
                        }
                        let (cap, updates) = current.as_mut().expect("set above");
                        let time = *cap.time();
                        let mut session = output.session(&*cap);
                        while fuel > 0 {
                            let Some((key, v, r)) = updates.next() else {
                                break;
                            };
                            let values = state.entry(key.clone()).or_default();
                            let before = top(values, k);
                            let mut apply = |v: V, r: isize| match values.get_mut(&v) {
                                Some(slot) => {
                                    *slot += r;
                                    if *slot == 0 {
                                        values.remove(&v);
                                    }
                                }
                                None => {
                                    values.insert(v, r);
                                }
                            };
                            apply(v, r);
                            fuel -= 1;
                            // A key's updates are applied together: output is per key.
                            while let Some((_, v, r)) = updates.next_if(|(next, _, _)| *next == key)
                            {
                                apply(v, r);
                                fuel = fuel.saturating_sub(1);
                            }
                            let after = top(values, k);
                            if values.is_empty() {
                                state.remove(&key);
                            }
                            if before != after {
                                if !before.is_empty() {
                                    session.give(((key.clone(), before), time, -1));
                                }
                                if !after.is_empty() {
                                    session.give(((key, after), time, 1));
                                }
                            }
                        }
                        drop(session);
                        if updates.peek().is_none() {
                            current = None; // the epoch is done: its capability is released
                        } else {
                            // Out of fuel: yield to the other operators, continue next time.
                            activator.activate();
                            break;
                        }
                    }
                }
            })
            .as_collection()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use differential_dataflow::input::Input;
    use std::sync::{Arc, Mutex};

    type Out = Vec<((u8, Vec<u16>), Epoch, isize)>;

    /// Seeded random inserts and removals (never below zero) over 40 epochs, on 1 and 3
    /// workers: after every epoch, the accumulated output equals the top-k recomputed from the
    /// accumulated input.
    #[test]
    fn matches_recomputation_after_every_epoch() {
        for (workers, fuel) in [(1, FUEL), (3, FUEL), (2, 1), (1, 3)] {
            let mut rng = 0x2545_f491_4f6c_dd1du64;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let mut live: BTreeMap<(u8, u16), isize> = BTreeMap::new();
            let mut epochs: Vec<Vec<((u8, u16), isize)>> = Vec::new();
            let mut expected: Vec<BTreeMap<u8, Vec<u16>>> = Vec::new();
            for _ in 0..40 {
                let mut batch = Vec::new();
                for _ in 0..next(30) {
                    let kv = (next(6) as u8, next(40) as u16);
                    let have = live.get(&kv).copied().unwrap_or(0);
                    let r = if have > 0 && next(2) == 0 {
                        -1
                    } else {
                        1 + next(2) as isize
                    };
                    *live.entry(kv).or_default() += r;
                    batch.push((kv, r));
                }
                live.retain(|_, r| *r != 0);
                let mut top: BTreeMap<u8, Vec<u16>> = BTreeMap::new();
                for (k, v) in live.keys() {
                    let list = top.entry(*k).or_default();
                    if list.len() < 4 {
                        list.push(*v);
                    }
                }
                epochs.push(batch);
                expected.push(top);
            }
            let out: Arc<Mutex<Out>> = Arc::default();
            let (sink, feed) = (out.clone(), Arc::new(epochs));
            timely::execute(timely::Config::process(workers), move |worker| {
                let sink = sink.clone();
                let (mut input, probe) = worker.dataflow::<Epoch, _, _>(|scope| {
                    let (input, pairs) = scope.new_collection::<(u8, u16), isize>();
                    let (probe, _) = pairs
                        .top_k_total_fueled("Top4", 4, fuel)
                        .inspect(move |x| sink.lock().unwrap().push(x.clone()))
                        .probe();
                    (input, probe)
                });
                for (e, batch) in feed.iter().enumerate() {
                    if worker.index() == e % worker.peers() {
                        for (kv, r) in batch {
                            input.update(*kv, *r);
                        }
                    }
                    input.advance_to(e as Epoch + 1);
                    input.flush();
                    worker.step_while(|| probe.less_than(input.time()));
                }
            })
            .unwrap();
            let out = out.lock().unwrap();
            for (e, want) in expected.iter().enumerate() {
                let mut acc: BTreeMap<(u8, Vec<u16>), isize> = BTreeMap::new();
                for (row, t, r) in out.iter() {
                    if *t <= e as Epoch {
                        *acc.entry(row.clone()).or_default() += r;
                    }
                }
                acc.retain(|_, r| *r != 0);
                assert!(acc.values().all(|r| *r == 1), "epoch {e}: {acc:?}");
                let got: BTreeMap<u8, Vec<u16>> = acc.into_keys().collect();
                assert_eq!(&got, want, "{workers} workers, fuel {fuel}, epoch {e}");
            }
        }
    }
}
