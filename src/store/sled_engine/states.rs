//! Source states: kept in memory, written through to sled, one writer per source.

use super::*;

impl Trees {
    pub(super) fn states(&self) -> MutexGuard<'_, HashMap<String, SourceState>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kept state of `source`, read from sled on first use. A state read from sled never
    /// replaces one a writer kept meanwhile.
    pub(super) fn state(&self, source: &str) -> Result<SourceState, StoreError> {
        if let Some(state) = self.states().get(source) {
            return Ok(state.clone());
        }
        let Some(bytes) = self.sources.get(source.as_bytes())? else {
            return Ok(SourceState::default());
        };
        let state: SourceState = decode(&bytes, "source state")?;
        Ok(self
            .states()
            .entry(source.to_owned())
            .or_insert(state)
            .clone())
    }

    /// Items stored, from the sources' counts, which every poll and prune keeps exact (as on
    /// PostgreSQL). Counting the `items` tree instead read every record of the store through
    /// sled's cache: at 1,000,000 items about 100 MB of it stayed in memory, at every
    /// `/metrics` scrape, status page and dictionary check.
    pub(super) fn stored_item_count(&self) -> Result<usize, StoreError> {
        let mut total = 0u64;
        for key in self.sources.iter().keys() {
            let key = key?;
            let name = String::from_utf8_lossy(&key);
            // The kept count without copying the state; `state` reads one not kept yet.
            let kept = self.states().get(name.as_ref()).map(|s| s.item_count);
            let count = match kept {
                Some(count) => count,
                None => self.state(&name)?.item_count,
            };
            total = total.saturating_add(count);
        }
        Ok(usize::try_from(total).unwrap_or(usize::MAX))
    }

    /// Writes the state `change` makes of the stored one: sled first, then the kept copy,
    /// under the source's own lock.
    pub(super) fn update_state(
        &self,
        source: &str,
        change: impl FnOnce(SourceState) -> SourceState,
    ) -> Result<(), StoreError> {
        let writer = self.state_writer(source);
        let _writing = writer.lock().unwrap_or_else(|p| p.into_inner());
        let next = change(self.state(source)?);
        self.write_state(source, next)
    }

    /// Writes `state` with the stored item count (a poll that stores no item), under the
    /// source's own lock: as [`Trees::update_state`], without copying the stored state.
    pub(super) fn put_state_keeping_count(
        &self,
        source: &str,
        state: SourceState,
    ) -> Result<(), StoreError> {
        let writer = self.state_writer(source);
        let _writing = writer.lock().unwrap_or_else(|p| p.into_inner());
        let kept = self.states().get(source).map(|kept| kept.item_count);
        let item_count = match kept {
            Some(count) => count,
            None => self.state(source)?.item_count,
        };
        self.write_state(
            source,
            SourceState {
                item_count,
                ..state
            },
        )
    }

    /// The lock held while `source`'s state is written.
    pub(super) fn state_writer(&self, source: &str) -> Arc<Mutex<()>> {
        let mut writers = self.state_writers.lock().unwrap_or_else(|p| p.into_inner());
        match writers.get(source) {
            Some(writer) => writer.clone(),
            None => writers.entry(source.to_owned()).or_default().clone(),
        }
    }

    /// sled first, then the kept copy; the caller holds the source's lock.
    pub(super) fn write_state(&self, source: &str, next: SourceState) -> Result<(), StoreError> {
        self.sources.insert(source.as_bytes(), encode(&next))?;
        let mut states = self.states();
        match states.get_mut(source) {
            Some(kept) => *kept = next,
            None => {
                states.insert(source.to_owned(), next);
            }
        }
        Ok(())
    }
}

impl SourceStates for SledEngine {
    fn source_state(&self, source: &str) -> Result<SourceState, StoreError> {
        self.trees()?.state(source)
    }

    fn put_source_state(&self, source: &str, state: SourceState) -> Result<(), StoreError> {
        self.guarded(|| {
            self.trees()?.put_state_keeping_count(source, state)?;
            self.flush_lazily()
        })
    }

    fn source_states(&self) -> Result<HashMap<String, SourceState>, StoreError> {
        let trees = self.trees()?;
        let mut states = HashMap::new();
        for key in trees.sources.iter().keys() {
            let name = String::from_utf8_lossy(&key?).into_owned();
            let state = trees.state(&name)?;
            states.insert(name, state);
        }
        Ok(states)
    }

    fn is_shared(&self) -> bool {
        false // sled's lock keeps every other process out
    }

    fn claim_poll(
        &self,
        _source: &str,
        _host: Option<&str>,
        _seen: SeenPoll,
        _lease: std::time::Duration,
        _host_gap: std::time::Duration,
    ) -> Result<PollClaim, StoreError> {
        // One process has the store (sled's lock): its scheduler decides alone.
        Ok(PollClaim::Granted)
    }

    fn release_poll(&self, _source: &str) -> Result<(), StoreError> {
        Ok(())
    }
}
