//! Source states: one row per source, its item count in a column of its own so that a state
//! written without items never overwrites the count a poll or a prune set.

use postgres::types::Json;

use super::*;
use crate::model::SourceState;

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
        let Json(state): Json<SourceState> = row.try_get(0).map_err(|e| StoreError::Corrupt {
            what: "source state",
            message: e.to_string(),
        })?;
        let item_count: i64 = row.get(1);
        Ok(SourceState {
            item_count: item_count.max(0) as u64,
            ..state
        })
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
}
