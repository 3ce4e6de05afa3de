//! Checksum errors: counted per image and for the store, logged, and reported by scrub (docs/FORMAT.md,
//! "Checksums").

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use basalt_core::{Error, ErrorKind};

use crate::layer::mutex_lock;

/// One image's checksum errors.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Errors not cleared by a scrub: the image is degraded while this is not 0.
    now: u64,
    /// Every detection since the store opened.
    total: u64,
}

/// The checksum errors seen since the store was opened.
#[derive(Debug, Default)]
pub(crate) struct Integrity {
    per_image: Mutex<HashMap<String, Counts>>,
}

impl Integrity {
    /// Counts and logs a bad block a read met; returns the error the reader gets.
    pub fn bad_block(&self, image_id: &str, image: &str, layer: u64, image_offset: Option<u64>) -> Error {
        {
            let mut map = mutex_lock(&self.per_image);
            let counts = map.entry(image_id.to_owned()).or_default();
            counts.now += 1;
            counts.total += 1;
        }
        let at = match image_offset {
            Some(off) => format!("the 4 KiB block at image offset {off}"),
            None => "a 4 KiB block".to_owned(),
        };
        let message = format!(
            "checksum mismatch in image '{image}' (layer {layer:016x}): {at} does not match its checksum, so it \
             was not returned; the data on disk is damaged (`basalt scrub` finds every damaged block)"
        );
        // Not `eprintln!`, which panics when stderr cannot be written (a log on a full disk).
        let _ = writeln!(std::io::stderr(), "basalt: i/o error: {message}");
        Error::new(ErrorKind::Io, message)
    }

    /// Errors an image has now (not cleared by a clean scrub).
    pub fn errors_of(&self, image_id: &str) -> u64 {
        mutex_lock(&self.per_image).get(image_id).map_or(0, |c| c.now)
    }

    /// Records what a scrub of an image found: its errors now become that (0 clears its degraded status).
    pub fn scrubbed(&self, image_id: &str, found: u64) {
        let mut map = mutex_lock(&self.per_image);
        if found == 0 {
            if let Some(c) = map.get_mut(image_id) {
                c.now = 0;
            }
            return;
        }
        let counts = map.entry(image_id.to_owned()).or_default();
        counts.now = found;
        counts.total += found;
    }

    /// Every image that had errors: `(image id, errors now, total)`, sorted by id.
    pub fn all(&self) -> Vec<(String, u64, u64)> {
        let mut out: Vec<(String, u64, u64)> =
            mutex_lock(&self.per_image).iter().map(|(k, c)| (k.clone(), c.now, c.total)).collect();
        out.sort();
        out
    }
}
