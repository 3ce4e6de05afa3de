//! Progress callbacks of long librbd operations (resize, remove, copy, flatten, rollback, trash remove and purge):
//! a Rust closure behind librbd's `librbd_progress_fn_t`, with cancellation.
//!
//! The closure gets `(done, total)` and answers [`ControlFlow::Break`] to cancel: librbd then stops the operation at
//! its next safe point and the wrapper reports `ECANCELED`. librbd may call it from its own threads while the caller
//! waits, hence the `Send` bound; a mutex keeps two calls from running at once. A panic in the closure cancels the
//! operation and is resumed on the caller's thread once librbd has returned.
#![cfg_attr(not(feature = "ceph"), allow(dead_code))]

use std::any::Any;
use std::ffi::{c_int, c_void};
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use basalt_core::{Error, ErrorKind, Progress};

/// A progress callback: `(done, total)`; [`ControlFlow::Break`] cancels the operation.
pub type ProgressFn<'a> = dyn FnMut(u64, u64) -> ControlFlow<()> + Send + 'a;

/// A callback that ignores progress and never cancels.
pub fn no_progress() -> impl FnMut(u64, u64) -> ControlFlow<()> + Send {
    |_, _| ControlFlow::Continue(())
}

/// A callback that records progress in basalt's [`Progress`] and cancels once [`Progress::cancel`] was called.
pub fn report_to(progress: &Progress) -> impl FnMut(u64, u64) -> ControlFlow<()> + Send + '_ {
    move |done, total| {
        progress.set(done, total);
        if progress.is_cancelled() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    }
}

/// The state a trampoline works on: the closure, whether it asked to cancel, and a panic to resume.
pub(crate) struct ProgressContext<'a, 'f> {
    callback: Mutex<&'a mut ProgressFn<'f>>,
    cancelled: AtomicBool,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl<'a, 'f> ProgressContext<'a, 'f> {
    pub(crate) fn new(callback: &'a mut ProgressFn<'f>) -> ProgressContext<'a, 'f> {
        ProgressContext { callback: Mutex::new(callback), cancelled: AtomicBool::new(false), panic: Mutex::new(None) }
    }

    /// The `cbdata` pointer to hand librbd with [`progress_trampoline`]; valid while `self` is borrowed.
    pub(crate) fn as_arg(&self) -> *mut c_void {
        std::ptr::from_ref(self).cast_mut().cast()
    }

    /// Turns the operation's return code into its result: a closure's panic is resumed here, and a failure after the
    /// closure asked to cancel is reported as `ECANCELED` whatever errno librbd chose.
    pub(crate) fn finish<C: std::fmt::Display>(self, ret: c_int, context: impl FnOnce() -> C) -> Result<(), Error> {
        if let Some(payload) = self.panic.into_inner().unwrap_or_else(PoisonError::into_inner) {
            resume_unwind(payload);
        }
        if ret >= 0 {
            return Ok(());
        }
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Cancelled, format!("{}: cancelled", context())));
        }
        Err(crate::error::from_errno(ret, context()))
    }

    fn call(&self, done: u64, total: u64) -> c_int {
        if self.cancelled.load(Ordering::SeqCst) {
            return -libc::ECANCELED;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut callback = self.callback.lock().unwrap_or_else(PoisonError::into_inner);
            (*callback)(done, total)
        }));
        match outcome {
            Ok(ControlFlow::Continue(())) => 0,
            Ok(ControlFlow::Break(())) => {
                self.cancelled.store(true, Ordering::SeqCst);
                -libc::ECANCELED
            }
            Err(payload) => {
                self.cancelled.store(true, Ordering::SeqCst);
                let mut slot = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
                slot.get_or_insert(payload);
                -libc::ECANCELED
            }
        }
    }
}

/// librbd's `librbd_progress_fn_t` over a [`ProgressContext`].
///
/// # Safety
///
/// `arg` must come from [`ProgressContext::as_arg`] of a context that is still alive.
pub(crate) unsafe extern "C" fn progress_trampoline(done: u64, total: u64, arg: *mut c_void) -> c_int {
    // SAFETY: the caller guarantees `arg` points to a live ProgressContext; it is only used through `&`.
    let context = unsafe { &*arg.cast::<ProgressContext<'_, '_>>() };
    context.call(done, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(context: &ProgressContext<'_, '_>, done: u64, total: u64) -> c_int {
        // SAFETY: the context outlives the call.
        unsafe { progress_trampoline(done, total, context.as_arg()) }
    }

    #[test]
    fn the_closure_sees_every_update() {
        let mut seen = Vec::new();
        let mut callback = |done, total| {
            seen.push((done, total));
            ControlFlow::Continue(())
        };
        let context = ProgressContext::new(&mut callback);
        assert_eq!(run(&context, 1, 4), 0);
        assert_eq!(run(&context, 4, 4), 0);
        assert_eq!(context.finish(0, || "op"), Ok(()));
        assert_eq!(seen, [(1, 4), (4, 4)]);
    }

    #[test]
    fn break_cancels_and_failure_reads_as_ecanceled() {
        let mut calls = 0;
        let mut callback = |done, _| {
            calls += 1;
            if done >= 2 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        };
        let context = ProgressContext::new(&mut callback);
        assert_eq!(run(&context, 1, 8), 0);
        assert_eq!(run(&context, 2, 8), -libc::ECANCELED);
        // Later updates are refused without calling the closure again.
        assert_eq!(run(&context, 3, 8), -libc::ECANCELED);
        let err = context.finish(-libc::ERESTART, || "flattening rbd/c").expect_err("cancelled");
        assert_eq!(err.kind(), ErrorKind::Cancelled);
        assert_eq!(err.message(), "flattening rbd/c: cancelled");
        assert_eq!(calls, 2);
    }

    #[test]
    fn a_cancelled_operation_that_finished_anyway_succeeds() {
        let mut callback = |_, _| ControlFlow::Break(());
        let context = ProgressContext::new(&mut callback);
        assert_eq!(run(&context, 1, 1), -libc::ECANCELED);
        assert_eq!(context.finish(0, || "op"), Ok(()));
    }

    #[test]
    fn errors_without_cancel_keep_their_kind() {
        let mut callback = no_progress();
        let context = ProgressContext::new(&mut callback);
        let err = context.finish(-libc::EBUSY, || "removing rbd/a").expect_err("failed");
        assert_eq!(err.kind(), ErrorKind::Busy);
    }

    #[test]
    fn a_panic_cancels_and_is_resumed_by_finish() {
        let mut callback = |_, _| -> ControlFlow<()> { panic!("boom") };
        let context = ProgressContext::new(&mut callback);
        assert_eq!(run(&context, 1, 2), -libc::ECANCELED);
        let resumed = catch_unwind(AssertUnwindSafe(|| context.finish(-libc::ECANCELED, || "op")));
        let payload = resumed.expect_err("the panic is resumed");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    }

    #[test]
    fn report_to_fills_progress_and_honours_cancel() {
        let progress = Progress::new();
        let mut callback = report_to(&progress);
        assert_eq!(callback(3, 10), ControlFlow::Continue(()));
        assert_eq!(progress.get(), (3, 10));
        progress.cancel();
        assert_eq!(callback(4, 10), ControlFlow::Break(()));
    }
}
