//! Settings a running server replaces without a restart (a configuration
//! reload) while connections keep reading them.

use std::fmt;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex};

/// A value read on hot paths (every read of every connection) and replaced
/// rarely (a reload). A read is one atomic load and hands out a plain
/// reference, so that readers hold no guard and pay no count; in exchange
/// each value replaced is kept until the cell is dropped, for whoever still
/// holds a reference to it. That is one old value per reload.
pub struct Current<T> {
    /// The value in force: one of `values`.
    current: AtomicPtr<T>,
    /// Every value the cell has held, never dropped before the cell. Arcs,
    /// not boxes: moving a box asserts it is the only way to its value,
    /// which the pointer above is too.
    values: Mutex<Vec<Arc<T>>>,
}

impl<T> Current<T> {
    pub fn new(value: T) -> Current<T> {
        let value = Arc::new(value);
        Current {
            current: AtomicPtr::new(Arc::as_ptr(&value).cast_mut()),
            values: Mutex::new(vec![value]),
        }
    }

    /// The value in force.
    pub fn get(&self) -> &T {
        // SAFETY: `current` always points at a value in `values`, which
        // keeps every value it got for as long as the cell lives, and never
        // hands out a mutable reference to one: the value outlives `&self`.
        unsafe { &*self.current.load(Ordering::Acquire) }
    }

    /// Puts `value` in force. Those who read the old one keep it.
    pub fn set(&self, value: T) {
        let value = Arc::new(value);
        let ptr = Arc::as_ptr(&value).cast_mut();
        crate::c2s::lock(&self.values).push(value);
        self.current.store(ptr, Ordering::Release);
    }
}

impl<T: fmt::Debug> fmt::Debug for Current<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_taken_before_a_replacement_stays_valid() {
        let cell = Current::new(String::from("first"));
        let old = cell.get();
        cell.set(String::from("second"));
        assert_eq!(old, "first");
        assert_eq!(cell.get(), "second");
        // Read from other threads while being replaced.
        let cell = Arc::new(Current::new(0u64));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let cell = cell.clone();
                std::thread::spawn(move || (0..10_000).map(|_| *cell.get()).max())
            })
            .collect();
        for i in 1..=100 {
            cell.set(i);
        }
        for r in readers {
            assert!(r.join().unwrap().unwrap() <= 100);
        }
        assert_eq!(*cell.get(), 100);
    }
}
