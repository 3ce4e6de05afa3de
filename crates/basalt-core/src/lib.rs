//! basalt's core: domain types, errno-style errors, name and size validation, configuration options, and the
//! Backend trait that the embedded engine and the Ceph backend implement.
//!
//! This crate knows nothing of HTTP, JSON, NBD, tokio or the disk.

mod backend;
pub mod config;
mod error;
mod image;
mod names;
pub mod rbd_diff;
pub mod schedule;
pub mod time;
pub mod units;

pub use backend::{
    Backend, Clock, DiffGranularity, Durability, FlushDone, ImageIo, IoRequest, ManualClock, Progress, SystemClock,
    TrashForce, ZeroMode, default_location, location_of, sibling,
};
pub use error::{Error, ErrorKind, Result};
pub use image::*;
pub use names::*;
pub use schedule::{
    ScheduleInterval, ScheduleItem, ScheduleLevel, ScheduleStartTime, ScheduledPurge, TrashPurgeSchedule,
};
