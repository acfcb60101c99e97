//! The bookkeeping of a destination that commits each epoch (the records between two
//! barriers) together with a marker saying how many records the epoch held and which of them
//! were refused: the SQL and Redis destinations.
//!
//! After a crash the source replays from the last completed checkpoint. When the destination
//! already holds the epoch after that checkpoint (its marker says epoch `n + 1`), the first
//! `records` replayed records are skipped, and the refusals among them are reported again,
//! so the dead-letter destination sees them as before.

use std::collections::HashMap;

/// Where the current epoch stands.
#[derive(Debug, Default)]
pub(crate) struct Epoch {
    /// Records passed to `write` since the last barrier (or recover), and the refusals among
    /// them by that ordinal: what the epoch's marker records.
    in_epoch: u64,
    refused: Vec<(u64, String)>,
    /// After a recover: the first `skip` records since the last barrier are already written
    /// (and `replay_refused` of them were refused then).
    skip: u64,
    replay_refused: HashMap<u64, String>,
}

/// What a barrier's marker says.
#[derive(Debug, PartialEq)]
pub(crate) struct Marker {
    /// The epoch the destination holds once the marker is written.
    pub epoch: u64,
    pub records: u64,
    pub refused: Vec<(u64, String)>,
    /// The destination already held records past this barrier (a replay that stopped short
    /// of the committed epoch): the marker keeps saying so, for a recover from this barrier.
    pub ahead: bool,
}

impl Epoch {
    /// Takes the next record, `i`th of its batch: `Some(ordinal)` to write it, or `None` when
    /// it is a replay of a record the destination already holds (its refusal then, if it was
    /// refused, is pushed to `refused` again).
    pub fn next(&mut self, i: usize, refused: &mut Vec<(usize, String)>) -> Option<u64> {
        let ordinal = self.in_epoch;
        self.in_epoch += 1;
        if ordinal < self.skip {
            if let Some(reason) = self.replay_refused.get(&ordinal) {
                refused.push((i, reason.clone()));
                self.refused.push((ordinal, reason.clone()));
            }
            return None;
        }
        Some(ordinal)
    }

    /// Notes that the record `ordinal` of this epoch was refused.
    pub fn refuse(&mut self, ordinal: u64, reason: String) {
        self.refused.push((ordinal, reason));
    }

    /// The marker of the barrier after `epoch` (the checkpoint's number): the destination
    /// then holds `epoch`, or — while replaying short of what it already held — still
    /// `epoch + 1` with the records past this barrier. The epoch starts over.
    pub fn barrier(&mut self, epoch: u64) -> Marker {
        let marker = if self.skip > self.in_epoch {
            let refused: Vec<(u64, String)> =
                self.replay_refused.iter().filter(|(o, _)| **o >= self.in_epoch).map(|(o, r)| (o - self.in_epoch, r.clone())).collect();
            let remaining = self.skip - self.in_epoch;
            self.skip = remaining;
            self.replay_refused = refused.iter().cloned().collect();
            Marker { epoch: epoch + 1, records: remaining, refused, ahead: true }
        } else {
            self.skip = 0;
            self.replay_refused.clear();
            Marker { epoch, records: self.in_epoch, refused: std::mem::take(&mut self.refused), ahead: false }
        };
        self.restart();
        marker
    }

    /// The epoch's records are gone (an abort): counting starts over.
    pub fn restart(&mut self) {
        self.in_epoch = 0;
        self.refused.clear();
    }

    /// Nothing is left to skip (the end of a run, or a recover before reading the marker).
    pub fn reset(&mut self) {
        self.restart();
        self.skip = 0;
        self.replay_refused.clear();
    }

    /// A recover found the destination holding the next epoch already: its first `records`
    /// replayed records are skipped, and `refused` of them reported again.
    pub fn replay(&mut self, records: u64, refused: Vec<(u64, String)>) {
        self.skip = records;
        self.replay_refused = refused.into_iter().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_skips_what_the_destination_holds_and_reports_its_refusals_again() {
        let mut e = Epoch::default();
        e.replay(3, vec![(1, "bad".into())]);
        let mut refused = Vec::new();
        let taken: Vec<Option<u64>> = (0..5).map(|i| e.next(i, &mut refused)).collect();
        assert_eq!(taken, [None, None, None, Some(3), Some(4)]);
        assert_eq!(refused, [(1, "bad".to_string())]);
        e.refuse(4, "worse".into());
        let m = e.barrier(7);
        assert_eq!(m, Marker { epoch: 7, records: 5, refused: vec![(1, "bad".into()), (4, "worse".into())], ahead: false });
        assert_eq!(e.next(0, &mut refused), Some(0), "counting starts over, and nothing is skipped after the barrier");
    }

    #[test]
    fn a_barrier_inside_a_replayed_epoch_keeps_the_rest_ahead() {
        let mut e = Epoch::default();
        e.replay(5, vec![(1, "a".into()), (3, "b".into())]);
        let mut refused = Vec::new();
        assert_eq!(e.next(0, &mut refused), None);
        assert_eq!(e.next(1, &mut refused), None);
        let m = e.barrier(4);
        assert_eq!(m, Marker { epoch: 5, records: 3, refused: vec![(1, "b".into())], ahead: true });
        // After it, the remaining three are skipped, the second of them refused again.
        let mut refused = Vec::new();
        let taken: Vec<Option<u64>> = (0..4).map(|i| e.next(i, &mut refused)).collect();
        assert_eq!(taken, [None, None, None, Some(3)]);
        assert_eq!(refused, [(1, "b".to_string())]);
        e.reset();
        assert_eq!(e.next(0, &mut Vec::new()), Some(0));
    }
}
