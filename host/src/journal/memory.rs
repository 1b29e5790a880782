//! An in-memory sink for work that needs no journal (`check`, tests).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::events::{Event, Sink};

/// Keeps events and state in memory; optionally forwards each event.
pub struct MemorySink {
    events: Mutex<Vec<Event>>,
    state: Mutex<BTreeMap<(String, String), String>>,
    start: Instant,
    observer: Option<super::Observer>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new(observer: Option<super::Observer>) -> Self {
        MemorySink {
            events: Mutex::default(),
            state: Mutex::default(),
            start: Instant::now(),
            observer,
        }
    }

    /// Preset state.
    pub fn set_state(&self, service: &str, key: &str, value: &str) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((service.into(), key.into()), value.into());
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// State of one service.
    pub fn state_of(&self, service: &str) -> BTreeMap<String, String> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((s, _), _)| s == service)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Default for MemorySink {
    fn default() -> Self {
        MemorySink::new(None)
    }
}

impl Sink for MemorySink {
    fn emit(&self, ev: Event) {
        if let Event::State {
            service,
            key,
            value,
        } = &ev
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match value {
                Some(v) => st.insert((service.clone(), key.clone()), v.clone()),
                None => st.remove(&(service.clone(), key.clone())),
            };
        }
        if let Some(o) = &self.observer {
            o(&ev);
        }
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ev);
    }

    fn state_get(&self, service: &str, key: &str) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(service.to_string(), key.to_string()))
            .cloned()
    }

    fn state_held(&self, service: &str) -> (usize, usize) {
        crate::events::held_by(
            &self.state.lock().unwrap_or_else(|p| p.into_inner()),
            service,
        )
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}
