//! Asynchronous image I/O: many librbd requests in flight from one thread, each waited for on its own.
//!
//! Requests are issued inside [`Image::aio_scope`], in the manner of `std::thread::scope`: the buffers they borrow
//! must outlive the scope, and the scope does not return (nor unwind) before every request it issued has completed.
//! That is what makes borrowing sound: librbd reads and writes the caller's buffer until the completion fires, and
//! nothing the caller does inside the scope (dropping an [`AioOp`], `mem::forget`, a panic) can end the borrow early.
//!
//! ```no_run
//! # fn demo(image: &basalt_ceph::Image) -> basalt_core::Result<()> {
//! let mut first = vec![0u8; 4096];
//! let mut second = vec![0u8; 4096];
//! image.aio_scope(|scope| {
//!     let a = scope.read(0, &mut first)?;
//!     let b = scope.read(4096, &mut second)?;
//!     a.wait()?;
//!     b.wait()?;
//!     Ok::<(), basalt_core::Error>(())
//! })?;
//! # Ok(())
//! # }
//! ```
//!
//! A buffer that would not outlive the scope is refused at compile time:
//!
//! ```compile_fail,E0597
//! # fn demo(image: &basalt_ceph::Image) {
//! image.aio_scope(|scope| {
//!     let mut local = vec![0u8; 4096];
//!     let _ = scope.read(0, &mut local);
//! });
//! # }
//! ```
//!
//! Each request has its own completion; librbd's callback stores the result, releases the completion and wakes the
//! waiter through a mutex and condition variable. Waiting blocks the calling thread, which suits the NBD server's
//! blocking workers.

use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::ptr;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use basalt_core::{Error, Result};

use crate::error::{check, check_i64};
use crate::ffi;
use crate::image::{Image, ZeroFlags};

/// The number of requests of a scope still in flight.
#[derive(Debug, Default)]
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl InFlight {
    fn start(&self) {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    }

    fn finish(&self) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.idle.notify_all();
        }
    }

    fn wait_idle(&self) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        while *count > 0 {
            count = self.idle.wait(count).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Where one request's result lands.
#[derive(Debug)]
struct Slot {
    result: Mutex<Option<i64>>,
    done: Condvar,
    in_flight: Arc<InFlight>,
}

impl Slot {
    fn complete(&self, result: i64) {
        *self.result.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        self.done.notify_all();
        // Last: once the count reaches zero the scope may return and the borrowed buffers go away; nothing below
        // touches them.
        self.in_flight.finish();
    }
}

/// librbd's completion callback: records the result and releases the completion.
unsafe extern "C" fn aio_complete(completion: ffi::rbd_completion_t, arg: *mut c_void) {
    // SAFETY: `arg` is the `Arc<Slot>` reference leaked by `AioScope::submit` for this completion; the callback runs
    // once per completion, so the reference is reclaimed exactly once.
    let slot = unsafe { Arc::from_raw(arg.cast_const().cast::<Slot>()) };
    // SAFETY: the completion is valid inside its callback.
    let result = unsafe { ffi::rbd_aio_get_return_value(completion) };
    // SAFETY: released once, here; librbd allows releasing from the callback and nothing else uses it afterwards.
    unsafe { ffi::rbd_aio_release(completion) };
    slot.complete(result as i64);
}

/// Issues asynchronous requests on one image; see the module documentation.
///
/// As in `std::thread::Scope`, `'env` is the lifetime of what the requests may borrow and `'scope` the lifetime of
/// the scope itself, at most `'env`; both are invariant, so a buffer's borrow cannot be shortened to less than the
/// whole scope.
pub struct AioScope<'scope, 'env: 'scope> {
    image: &'scope Image,
    in_flight: Arc<InFlight>,
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl std::fmt::Debug for AioScope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AioScope").field("image", &self.image.label()).finish()
    }
}

/// One request in flight. Waiting is optional: the scope waits for every request anyway, but an unwaited request's
/// result (and so its error) is lost.
#[must_use = "an AioOp's error is lost unless it is waited for"]
#[derive(Debug)]
pub struct AioOp<'scope> {
    slot: Arc<Slot>,
    what: &'static str,
    _scope: PhantomData<&'scope ()>,
}

impl AioOp<'_> {
    /// Whether the request has completed.
    pub fn is_complete(&self) -> bool {
        self.slot.result.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// Blocks until the request completes; returns librbd's non-negative result (bytes for reads).
    pub fn wait(self) -> Result<u64> {
        let mut result = self.slot.result.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(value) = *result {
                return check_i64(value, || format!("asynchronous {}", self.what));
            }
            result = self.slot.done.wait(result).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Waits for every request of a scope when dropped, on return and on unwind alike.
struct WaitOnDrop<'a>(&'a InFlight);

impl Drop for WaitOnDrop<'_> {
    fn drop(&mut self) {
        self.0.wait_idle();
    }
}

impl Image {
    /// Runs `body` with an [`AioScope`] for this image and returns its result once every request issued in it has
    /// completed.
    pub fn aio_scope<'env, R>(&self, body: impl for<'scope> FnOnce(&'scope AioScope<'scope, 'env>) -> R) -> R {
        let scope =
            AioScope { image: self, in_flight: Arc::new(InFlight::default()), _scope: PhantomData, _env: PhantomData };
        let _wait = WaitOnDrop(&scope.in_flight);
        body(&scope)
    }
}

impl<'scope> AioScope<'scope, '_> {
    /// Blocks until every request issued so far has completed: one wake-up for a whole batch, after which each
    /// [`AioOp::wait`] returns at once.
    pub fn wait_all(&self) {
        self.in_flight.wait_idle();
    }

    /// Creates a completion and hands it to `start`, which issues the request.
    fn submit(&self, what: &'static str, start: impl FnOnce(ffi::rbd_completion_t) -> c_int) -> Result<AioOp<'scope>> {
        let slot = Arc::new(Slot { result: Mutex::new(None), done: Condvar::new(), in_flight: self.in_flight.clone() });
        let arg = Arc::into_raw(slot.clone()).cast_mut().cast::<c_void>();
        let mut completion: ffi::rbd_completion_t = ptr::null_mut();
        // SAFETY: valid out-pointer; `arg` stays valid until the callback reclaims it.
        let ret = unsafe { ffi::rbd_aio_create_completion(arg, Some(aio_complete), &mut completion) };
        if ret < 0 {
            // SAFETY: the completion does not exist, so the callback will never reclaim the leaked reference.
            drop(unsafe { Arc::from_raw(arg.cast_const().cast::<Slot>()) });
            check(ret, || format!("creating a completion for {what}"))?;
        }
        self.in_flight.start();
        let ret = start(completion);
        if ret < 0 {
            // librbd refused the request before queueing it: the callback will not run.
            // SAFETY: the completion was never submitted; release it and reclaim the reference once.
            unsafe {
                ffi::rbd_aio_release(completion);
                drop(Arc::from_raw(arg.cast_const().cast::<Slot>()));
            }
            self.in_flight.finish();
            check(ret, || format!("starting {what} on image {}", self.image.label()))?;
        }
        Ok(AioOp { slot, what, _scope: PhantomData })
    }

    /// Reads into `buf` at `offset`. `buf` stays borrowed until the scope ends.
    pub fn read(&self, offset: u64, buf: &'scope mut [u8]) -> Result<AioOp<'scope>> {
        let image = self.image.raw();
        let (len, data) = (buf.len(), buf.as_mut_ptr());
        self.submit("read", |completion| {
            // SAFETY: valid image; `buf` outlives the scope, which outlives the request.
            unsafe { ffi::rbd_aio_read(image, offset, len, data.cast(), completion) }
        })
    }

    /// Writes `data` at `offset`. `data` stays borrowed until the scope ends.
    pub fn write(&self, offset: u64, data: &'scope [u8]) -> Result<AioOp<'scope>> {
        let image = self.image.raw();
        self.submit("write", |completion| {
            // SAFETY: valid image; `data` outlives the scope, which outlives the request.
            unsafe { ffi::rbd_aio_write(image, offset, data.len(), data.as_ptr().cast(), completion) }
        })
    }

    /// Deallocates a range (at most [`crate::image::IO_CHUNK_BYTES`] per request).
    pub fn discard(&self, offset: u64, length: u64) -> Result<AioOp<'scope>> {
        check_length(length)?;
        let image = self.image.raw();
        self.submit("discard", |completion| {
            // SAFETY: valid image.
            unsafe { ffi::rbd_aio_discard(image, offset, length, completion) }
        })
    }

    /// Makes a range read as zeros (at most [`crate::image::IO_CHUNK_BYTES`] per request).
    pub fn write_zeroes(&self, offset: u64, length: u64, flags: ZeroFlags) -> Result<AioOp<'scope>> {
        check_length(length)?;
        let length = usize::try_from(length).map_err(|_| Error::invalid("zeroing too long"))?;
        let image = self.image.raw();
        self.submit("write_zeroes", |completion| {
            // SAFETY: valid image.
            unsafe { ffi::rbd_aio_write_zeroes(image, offset, length, completion, flags.to_raw(), 0) }
        })
    }

    /// Flushes every write acknowledged before it.
    pub fn flush(&self) -> Result<AioOp<'scope>> {
        let image = self.image.raw();
        self.submit("flush", |completion| {
            // SAFETY: valid image.
            unsafe { ffi::rbd_aio_flush(image, completion) }
        })
    }
}

fn check_length(length: u64) -> Result<()> {
    if length > crate::image::IO_CHUNK_BYTES {
        return Err(Error::invalid(format!(
            "asynchronous requests are limited to {} bytes, got {length}",
            crate::image::IO_CHUNK_BYTES
        )));
    }
    Ok(())
}
