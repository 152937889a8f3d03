//! The registry's captured output: a bounded ring of lines per worker,
//! read by `logs` and followed by `logs -f`.

use std::collections::VecDeque;

use arbor_protocol::control::Event;

use super::{Registry, LOG_LINES};
use crate::daemon::error::ControlError;
use crate::daemon::events::Subscription;

impl Registry {
    /// A line worker `id` printed: into its ring and out to followers
    /// under one lock, so that a `logs -f` (which takes its snapshot and
    /// subscribes under the same lock) sees each line exactly once.
    pub(in crate::daemon) fn output(
        &self,
        id: u64,
        line: String,
        event: impl FnOnce(String) -> Event,
    ) {
        let mut state = self.lock();
        if let Some(entry) = state.workers.get_mut(&id) {
            if entry.logs.len() == LOG_LINES {
                entry.logs.pop_front();
            }
            entry.logs.push_back(line.clone());
        }
        self.emit(event(line));
    }

    /// The last `lines` lines of worker `id`.
    pub(in crate::daemon) fn tail(&self, id: u64, lines: u32) -> Result<Vec<String>, ControlError> {
        let state = self.lock();
        let entry = state
            .workers
            .get(&id)
            .ok_or(ControlError::NoSuchWorker(id))?;
        Ok(last_lines(&entry.logs, lines))
    }

    /// The last `lines` lines of worker `id`, and every event after them.
    pub(in crate::daemon) fn follow(
        &self,
        id: u64,
        lines: u32,
    ) -> Result<(Vec<String>, Subscription), ControlError> {
        let state = self.lock();
        let entry = state
            .workers
            .get(&id)
            .ok_or(ControlError::NoSuchWorker(id))?;
        Ok((last_lines(&entry.logs, lines), self.subscribe()))
    }
}

fn last_lines(logs: &VecDeque<String>, lines: u32) -> Vec<String> {
    let skip = logs.len().saturating_sub(lines as usize);
    logs.iter().skip(skip).cloned().collect()
}
