//! The write mark: `feedmux.mark` beside sled's files holds how many polls that wrote items
//! the last flush made durable (the store counts them in `meta`). A store whose log holds
//! fewer was cut short or overwritten past them, which sled alone opens without a word; it is
//! refused at open. Written after each flush that made a higher count durable (`Trees::flush`).

use super::*;

/// Writes `polls` to the mark file beside sled's files (a new file renamed over the old, so a
/// crash leaves the old mark or the new one).
pub(super) fn write_mark(path: &Path, polls: u64) -> std::io::Result<()> {
    let fresh = path.join(format!("{WRITE_MARK_FILE}.new"));
    std::fs::write(&fresh, format!("{polls}\n"))?;
    std::fs::rename(&fresh, path.join(WRITE_MARK_FILE))
}

/// The count the mark file holds; `None` when there is none (a new store, one written before
/// marks, one just compacted) or it cannot be read.
fn read_mark(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path.join(WRITE_MARK_FILE)).ok()?;
    match text.trim().parse() {
        Ok(polls) => Some(polls),
        Err(_) => {
            tracing::warn!(path = %path.display(), "the store's write mark is unreadable; not checked");
            None
        }
    }
}

/// Refuses a store whose log holds fewer polls than were flushed: sled reads a log that was
/// cut short, or overwritten from some point on, up to the damage and opens what it holds there
/// without a word.
pub(super) fn check_write_mark(path: &Path, trees: &Trees) -> Result<(), StoreError> {
    let durable = trees
        .polls_written
        .load(std::sync::atomic::Ordering::Acquire);
    let Some(marked) = read_mark(path) else {
        return Ok(());
    };
    if durable < marked {
        return Err(StoreError::Damaged {
            path: path.to_owned(),
            reason: format!(
                "its log ends before the last poll feedmux flushed ({durable} of {marked} polls are there): the file was cut short or overwritten and the end is lost; delete {} to open what is left",
                path.join(WRITE_MARK_FILE).display()
            ),
        });
    }
    *trees.marked.lock().unwrap_or_else(|p| p.into_inner()) = marked;
    Ok(())
}
