//! Where an image byte lives: RBD's striping of image offsets onto objects, and the 4 KiB blocks inside objects
//! that are the engine's unit of allocation and copy-on-write.

use basalt_core::{ObjectOrder, Striping};

/// The engine's block: the unit of allocation, copy-on-write and the allocation bitmaps.
pub const BLOCK_SIZE: u64 = 4096;
/// `log2(BLOCK_SIZE)`.
pub const BLOCK_SHIFT: u32 = 12;

/// An image's layout: object size and striping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Object order.
    pub order: ObjectOrder,
    /// Stripe unit and count.
    pub striping: Striping,
}

/// A piece of an image extent that lies inside one object and one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Image offset of the piece.
    pub image_offset: u64,
    /// Length in bytes (at most one block).
    pub length: u64,
    /// Object number.
    pub object_no: u64,
    /// Offset inside the object.
    pub object_offset: u64,
}

impl Piece {
    /// Index of the block inside its object.
    pub fn block_in_object(&self) -> u64 {
        self.object_offset >> BLOCK_SHIFT
    }

    /// Offset inside the block.
    pub fn offset_in_block(&self) -> u64 {
        self.object_offset & (BLOCK_SIZE - 1)
    }

    /// True when the piece covers its whole block.
    pub fn is_whole_block(&self) -> bool {
        self.length == BLOCK_SIZE
    }
}

impl Layout {
    /// Object size in bytes.
    pub fn object_size(&self) -> u64 {
        self.order.object_size_bytes()
    }

    /// Blocks per object.
    pub fn blocks_per_object(&self) -> u64 {
        self.object_size() >> BLOCK_SHIFT
    }

    /// Maps an image offset to `(object number, offset in object)`, as RBD's file-to-extents mapping does.
    pub fn map(&self, image_offset: u64) -> (u64, u64) {
        let unit = self.striping.unit_bytes;
        let count = self.striping.count;
        let units_per_object = self.object_size() / unit;
        let block_no = image_offset / unit;
        let stripe_no = block_no / count;
        let stripe_pos = block_no % count;
        let object_set_no = stripe_no / units_per_object;
        let object_no = object_set_no * count + stripe_pos;
        let unit_in_object = stripe_no % units_per_object;
        (object_no, unit_in_object * unit + image_offset % unit)
    }

    /// Maps `(object number, offset in object)` back to the image offset.
    pub fn unmap(&self, object_no: u64, object_offset: u64) -> u64 {
        let unit = self.striping.unit_bytes;
        let count = self.striping.count;
        let units_per_object = self.object_size() / unit;
        let object_set_no = object_no / count;
        let stripe_pos = object_no % count;
        let unit_in_object = object_offset / unit;
        let stripe_no = object_set_no * units_per_object + unit_in_object;
        let block_no = stripe_no * count + stripe_pos;
        block_no * unit + object_offset % unit
    }

    /// Byte offset of an object's data inside a layer file.
    pub fn file_offset(&self, object_no: u64, object_offset: u64) -> u64 {
        object_no * self.object_size() + object_offset
    }

    /// Splits an image extent into pieces that each lie in one block of one object.
    pub fn pieces(&self, image_offset: u64, length: u64) -> impl Iterator<Item = Piece> + '_ {
        let end = image_offset + length;
        let mut at = image_offset;
        // Blocks never straddle a stripe unit, because the unit is a multiple of the block size.
        std::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let (object_no, object_offset) = self.map(at);
            let to_block_end = BLOCK_SIZE - (object_offset & (BLOCK_SIZE - 1));
            let piece_len = to_block_end.min(end - at);
            let piece = Piece { image_offset: at, length: piece_len, object_no, object_offset };
            at += piece_len;
            Some(piece)
        })
    }

    /// Number of objects an image of `size_bytes` spans, as RBD counts them.
    pub fn num_objects(&self, size_bytes: u64) -> u64 {
        let unit = self.striping.unit_bytes;
        let count = self.striping.count;
        let period = self.object_size() * count;
        let num_periods = size_bytes.div_ceil(period);
        let remainder_bytes = size_bytes % period;
        let remainder_objs = if remainder_bytes > 0 && remainder_bytes < count * unit {
            count - remainder_bytes.div_ceil(unit)
        } else {
            0
        };
        num_periods * count - remainder_objs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(order: u8, unit: u64, count: u64) -> Layout {
        let order = ObjectOrder::new(order).expect("valid order");
        Layout { order, striping: Striping::new(unit, count, order).expect("valid striping") }
    }

    #[test]
    fn unstriped_layout_is_the_identity_on_objects() {
        let l = layout(22, 4 << 20, 1);
        assert_eq!(l.map(0), (0, 0));
        assert_eq!(l.map((4 << 20) + 5), (1, 5));
        assert_eq!(l.num_objects(10 << 20), 3);
        assert_eq!(l.num_objects(0), 0);
    }

    #[test]
    fn striping_round_robins_units_over_the_object_set() {
        // 64 KiB objects, 16 KiB units, 3 objects per set: units go to objects 0,1,2,0,1,2,...
        let l = layout(16, 16 << 10, 3);
        assert_eq!(l.map(0), (0, 0));
        assert_eq!(l.map(16 << 10), (1, 0));
        assert_eq!(l.map(32 << 10), (2, 0));
        assert_eq!(l.map(48 << 10), (0, 16 << 10));
        // After 3 objects x 64 KiB, the next object set starts.
        assert_eq!(l.map(192 << 10), (3, 0));
        for off in (0..(1u64 << 20)).step_by(4096 + 512) {
            let (o, oo) = l.map(off);
            assert_eq!(l.unmap(o, oo), off);
        }
        assert_eq!(l.num_objects(192 << 10), 3);
        assert_eq!(l.num_objects((192 << 10) + 1), 4);
        assert_eq!(l.num_objects((192 << 10) + (16 << 10) + 1), 5);
    }

    #[test]
    fn pieces_never_cross_a_block() {
        let l = layout(12, 4096, 1);
        let pieces: Vec<Piece> = l.pieces(4000, 5000).collect();
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[0].length, 96);
        assert_eq!(pieces[1].length, 4096);
        assert_eq!(pieces[1].object_no, 1);
        assert_eq!(pieces.iter().map(|p| p.length).sum::<u64>(), 5000);
    }
}
