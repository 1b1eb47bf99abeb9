//! Source states: one row per source, its item count in a column of its own so that a state
//! written without items never overwrites the count a poll or a prune set.

use postgres::types::Json;
use std::collections::HashMap;

use postgres::Transaction;

use super::*;
use crate::model::SourceState;

/// A stored next poll at most this far ahead of a claim is the claimer's own slot (clocks of
/// one process's timers and the wall clock differ by this much), not another's poll.
const SLACK_US: i64 = 1_000_000;

impl SourceStates for PgEngine {
    fn source_state(&self, source: &str) -> Result<SourceState, StoreError> {
        let source = source.to_owned();
        let row = self.run(move |client| {
            Ok(client.query_opt(
                "SELECT state, item_count FROM source_states WHERE source = $1",
                &[&source],
            )?)
        })?;
        let Some(row) = row else {
            return Ok(SourceState::default());
        };
        state_of(row.try_get(0), row.get(1))
    }

    fn source_states(&self) -> Result<HashMap<String, SourceState>, StoreError> {
        let rows = self.run(|client| {
            Ok(client.query("SELECT source, state, item_count FROM source_states", &[])?)
        })?;
        rows.iter()
            .map(|row| Ok((row.get(0), state_of(row.try_get(1), row.get(2))?)))
            .collect()
    }

    fn put_source_state(&self, source: &str, state: SourceState) -> Result<(), StoreError> {
        let source = source.to_owned();
        self.run(move |client| {
            client.execute(
                "INSERT INTO source_states (source, state) VALUES ($1, $2)
                 ON CONFLICT (source) DO UPDATE SET state = excluded.state",
                &[&source, &Json(&state)],
            )?;
            Ok(())
        })
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn claim_poll(
        &self,
        source: &str,
        host: Option<&str>,
        seen: SeenPoll,
        lease: std::time::Duration,
        host_gap: std::time::Duration,
    ) -> Result<PollClaim, StoreError> {
        let (source, host) = (source.to_owned(), host.map(str::to_owned));
        let instance = self.instance.clone();
        let lease = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
        let gap = i64::try_from(host_gap.as_micros()).unwrap_or(i64::MAX);
        let (claim, db_now) = self.run(move |client| {
            let mut tx = client.transaction()?;
            let db_now: i64 = tx
                .query_one(
                    "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8",
                    &[],
                )?
                .get(0);
            let claim = claim_in(&mut tx, &source, &instance, seen, db_now, lease)?;
            if claim != Claimed::Granted {
                return Ok((claim, db_now));
            }
            if let Some(host) = host.filter(|_| gap > 0) {
                if let Some(until) = host_busy_until(&mut tx, &host, db_now, gap)? {
                    return Ok((Claimed::BusyUntil(until), db_now));
                }
            }
            tx.execute(
                "UPDATE poll_claims SET holder = $2, until_us = $3 WHERE source = $1",
                &[&source, &instance, &db_now.saturating_add(lease)],
            )?;
            tx.commit()?;
            Ok((Claimed::Granted, db_now))
        })?;
        Ok(match claim {
            Claimed::Granted => PollClaim::Granted,
            Claimed::Elsewhere { next, last_poll } => {
                PollClaim::PolledElsewhere { next, last_poll }
            }
            // The store's time, told as a wait from now on this process's clock.
            Claimed::BusyUntil(until) => PollClaim::Busy {
                until: Utc::now()
                    + chrono::Duration::microseconds(until.saturating_sub(db_now).max(0)),
            },
        })
    }

    fn release_poll(&self, source: &str) -> Result<(), StoreError> {
        let (source, instance) = (source.to_owned(), self.instance.clone());
        self.run(move |client| {
            client.execute(
                "UPDATE poll_claims SET until_us = 0 WHERE source = $1 AND holder = $2",
                &[&source, &instance],
            )?;
            Ok(())
        })
    }
}

/// A source's state from its row: the state's JSON and the item count.
fn state_of(
    json: Result<Json<SourceState>, postgres::Error>,
    item_count: i64,
) -> Result<SourceState, StoreError> {
    let Json(state) = json.map_err(|e| StoreError::Corrupt {
        what: "source state",
        message: e.to_string(),
    })?;
    Ok(SourceState {
        item_count: item_count.max(0) as u64,
        ..state
    })
}

/// What [`claim_in`] found, with times of the store's clock.
#[derive(Debug, PartialEq)]
enum Claimed {
    Granted,
    Elsewhere {
        next: Option<DateTime<Utc>>,
        last_poll: Option<DateTime<Utc>>,
    },
    BusyUntil(i64),
}

/// Whether the claim row of `source` allows `instance`, which saw its last poll as `seen`,
/// to poll it at `now` (the store's clock): not while another instance is deciding
/// (`SKIP LOCKED`: busy), nor while another's claim has not run out, nor when the stored
/// last poll is not the one `instance` saw (another polled it since).
fn claim_in(
    tx: &mut Transaction<'_>,
    source: &str,
    instance: &str,
    seen: SeenPoll,
    now: i64,
    lease: i64,
) -> Result<Claimed, StoreError> {
    tx.execute(
        "INSERT INTO poll_claims (source, holder, until_us) VALUES ($1, '', 0)
         ON CONFLICT (source) DO NOTHING",
        &[&source],
    )?;
    let row = tx.query_opt(
        "SELECT holder, until_us FROM poll_claims WHERE source = $1 FOR UPDATE SKIP LOCKED",
        &[&source],
    )?;
    let Some(row) = row else {
        // Another instance is claiming it this very moment.
        return Ok(Claimed::BusyUntil(now.saturating_add(lease.min(SLACK_US))));
    };
    let (holder, until): (String, i64) = (row.get(0), row.get(1));
    if holder != instance && until > now {
        return Ok(Claimed::BusyUntil(until));
    }
    let state = tx.query_opt(
        "SELECT state FROM source_states WHERE source = $1",
        &[&source],
    )?;
    let Some(row) = state else {
        return Ok(Claimed::Granted);
    };
    let Json(state): Json<SourceState> = row.try_get(0).map_err(|e| StoreError::Corrupt {
        what: "source state",
        message: e.to_string(),
    })?;
    let polled_since = match seen {
        SeenPoll::Last(last) => state.last_poll != last,
        // Not seen since this process started: the stored next poll says whether a slot is
        // due (by the clock of the instance that polled last).
        SeenPoll::Unknown => state
            .next_poll
            .is_some_and(|next| micros(next) > now.saturating_add(SLACK_US)),
    };
    if polled_since {
        return Ok(Claimed::Elsewhere {
            next: state.next_poll,
            last_poll: state.last_poll,
        });
    }
    Ok(Claimed::Granted)
}

/// When the next poll of `host` may start, if a poll of it started less than `gap` before
/// `now`; otherwise records `now` as its last poll and answers `None`.
fn host_busy_until(
    tx: &mut Transaction<'_>,
    host: &str,
    now: i64,
    gap: i64,
) -> Result<Option<i64>, StoreError> {
    tx.execute(
        "INSERT INTO host_polls (host, last_us) VALUES ($1, $2)
         ON CONFLICT (host) DO NOTHING",
        &[&host, &i64::MIN],
    )?;
    let last: i64 = tx
        .query_one(
            "SELECT last_us FROM host_polls WHERE host = $1 FOR UPDATE",
            &[&host],
        )?
        .get(0);
    let next = last.saturating_add(gap);
    if next > now {
        return Ok(Some(next));
    }
    tx.execute(
        "UPDATE host_polls SET last_us = $2 WHERE host = $1",
        &[&host, &now],
    )?;
    Ok(None)
}
