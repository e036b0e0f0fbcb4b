//! Work under way in this process: validations and finalizations. Clients see it as
//! `processing`; it is never stored, because after a restart there is nothing running and the
//! client simply asks again. It also keeps a second request from starting the same work.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Default, Clone)]
pub(crate) struct InFlight {
    ids: Arc<Mutex<HashSet<String>>>,
}

/// Holds an id as in flight until dropped, whatever way the work ends.
pub(crate) struct Running {
    ids: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl InFlight {
    /// Marks `id` as running, or returns `None` if it already is.
    pub(crate) fn start(&self, id: &str) -> Option<Running> {
        let inserted = self.lock().insert(id.to_owned());
        inserted.then(|| Running {
            ids: self.ids.clone(),
            id: id.to_owned(),
        })
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.lock().contains(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_runs_once_at_a_time() {
        let f = InFlight::default();
        let running = f.start("a").unwrap();
        assert!(f.start("a").is_none());
        assert!(f.contains("a") && !f.contains("b"));
        drop(running);
        assert!(!f.contains("a"));
        assert!(f.start("a").is_some());
    }
}
