//! libdav1d (the system library, 1.0 or later, through `dav1d-sys`): the AV1 still pictures
//! inside AVIF files. Two calls: [`sequence_header`] reads size, layout, bit depth and colour
//! description without decoding; [`decode`] decodes one picture on the calling thread (the
//! pool already runs one render per core).
//!
//! Every `unsafe` block is a plain libdav1d call on objects this module owns; the decoder
//! context, the input data and each picture are released by a `Drop` guard, on every path.

use std::ffi::c_int;

use dav1d_sys as sys;

use super::CodecError;

/// How chroma is sampled (AV1's `mono_chrome` and `subsampling_x/y`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Luma only.
    I400,
    /// Chroma at half width and half height.
    I420,
    /// Chroma at half width.
    I422,
    /// Chroma at full size.
    I444,
}

impl Layout {
    fn from_sys(layout: sys::Dav1dPixelLayout) -> Layout {
        match layout {
            sys::DAV1D_PIXEL_LAYOUT_I400 => Layout::I400,
            sys::DAV1D_PIXEL_LAYOUT_I420 => Layout::I420,
            sys::DAV1D_PIXEL_LAYOUT_I422 => Layout::I422,
            _ => Layout::I444,
        }
    }

    /// Right shifts from a luma to a chroma coordinate, (x, y).
    pub fn chroma_shift(self) -> (u32, u32) {
        match self {
            Layout::I420 => (1, 1),
            Layout::I422 => (1, 0),
            Layout::I400 | Layout::I444 => (0, 0),
        }
    }
}

/// The colour description of a bitstream (ITU-T H.273 code points, as in an AVIF's `nclx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cicp {
    /// Colour primaries (1 BT.709/sRGB, 2 unspecified, 9 BT.2020, 12 Display P3, …).
    pub primaries: u8,
    /// Transfer characteristics (13 sRGB, 1 BT.709, 16 PQ, 18 HLG, …).
    pub transfer: u8,
    /// Matrix coefficients of the YUV → RGB conversion (1 BT.709, 6 BT.601, 0 identity, …).
    pub matrix: u8,
    /// Full-range samples (else limited, "video", range).
    pub full_range: bool,
}

/// What a sequence header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceInfo {
    /// Largest frame width.
    pub width: u32,
    /// Largest frame height.
    pub height: u32,
    /// Chroma sampling.
    pub layout: Layout,
    /// Bits per sample: 8, 10 or 12.
    pub bit_depth: u8,
    /// Colour description.
    pub cicp: Cicp,
}

fn code(n: c_int) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

fn cicp(seq: &sys::Dav1dSequenceHeader) -> Cicp {
    let point = |n: u32| u8::try_from(n).unwrap_or(u8::MAX);
    Cicp {
        primaries: point(seq.pri),
        transfer: point(seq.trc),
        matrix: point(seq.mtrx),
        full_range: seq.color_range != 0,
    }
}

/// Bits per sample of a sequence header's `hbd` (0: 8, 1: 10, 2: 12).
fn bit_depth(hbd: c_int) -> u8 {
    8 + 2 * code(hbd).min(2)
}

/// Reads the sequence header among the OBUs of `obus`, decoding nothing.
pub fn sequence_header(obus: &[u8]) -> Result<SequenceInfo, CodecError> {
    // SAFETY: the header is plain data (zeroed is valid); libdav1d reads `obus.len()` bytes of
    // `obus` and writes only `seq`.
    let mut seq: sys::Dav1dSequenceHeader = unsafe { std::mem::zeroed() };
    let status = unsafe { sys::dav1d_parse_sequence_header(&mut seq, obus.as_ptr(), obus.len()) };
    if status != 0 {
        return Err(CodecError::Corrupt(format!(
            "avif: no valid AV1 sequence header ({status})"
        )));
    }
    let side = |n: c_int| u32::try_from(n).unwrap_or(0);
    Ok(SequenceInfo {
        width: side(seq.max_width),
        height: side(seq.max_height),
        layout: Layout::from_sys(seq.layout),
        bit_depth: bit_depth(seq.hbd),
        cicp: cicp(&seq),
    })
}

/// One decoded picture, planes owned by libdav1d until dropped.
pub struct Picture {
    pic: sys::Dav1dPicture,
}

impl Drop for Picture {
    fn drop(&mut self) {
        // SAFETY: `pic` came from `dav1d_get_picture` and is released once.
        unsafe { sys::dav1d_picture_unref(&mut self.pic) };
    }
}

/// A plane of a [`Picture`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    /// Luma (or the only plane of a monochrome picture).
    Y,
    /// Blue-difference chroma.
    U,
    /// Red-difference chroma.
    V,
}

impl Picture {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        u32::try_from(self.pic.p.w).unwrap_or(0)
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        u32::try_from(self.pic.p.h).unwrap_or(0)
    }

    /// Chroma sampling.
    pub fn layout(&self) -> Layout {
        Layout::from_sys(self.pic.p.layout)
    }

    /// Bits per sample: 8, 10 or 12 (stored in 16 bits above 8; [`decode`] refuses others).
    pub fn bit_depth(&self) -> u8 {
        code(self.pic.p.bpc)
    }

    /// The bitstream's colour description.
    pub fn cicp(&self) -> Cicp {
        // SAFETY: a picture from `dav1d_get_picture` holds a reference to its sequence header.
        cicp(unsafe { &*self.pic.seq_hdr })
    }

    /// Row `y` of `plane`: its samples as bytes (two per sample, native endian, above 8 bits).
    /// Empty for chroma planes of a monochrome picture and past the plane's last row.
    pub fn row(&self, plane: Plane, y: u32) -> &[u8] {
        let (shift_x, shift_y) = self.layout().chroma_shift();
        let (index, width, height) = match plane {
            Plane::Y => (0, self.width(), self.height()),
            _ if self.layout() == Layout::I400 => return &[],
            Plane::U | Plane::V => (
                if plane == Plane::U { 1 } else { 2 },
                self.width().div_ceil(1 << shift_x),
                self.height().div_ceil(1 << shift_y),
            ),
        };
        if y >= height {
            return &[];
        }
        let bytes = if self.bit_depth() > 8 { 2 } else { 1 };
        let stride = self.pic.stride[usize::from(index > 0)];
        let base = self.pic.data[index].cast::<u8>().cast_const();
        // SAFETY: libdav1d allocated `height` rows of `stride` bytes for this plane, each with
        // at least `width` samples; a negative stride (bottom-up) is a valid offset as well.
        unsafe {
            let start = base.offset(stride * y as isize);
            std::slice::from_raw_parts(start, width as usize * bytes)
        }
    }
}

/// The decoder context, closed on drop.
struct Context(*mut sys::Dav1dContext);

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: opened by `dav1d_open`, closed once (it frees pending data and pictures).
        unsafe { sys::dav1d_close(&mut self.0) };
    }
}

/// Input data, released on drop if libdav1d has not consumed it all.
struct Data(sys::Dav1dData);

impl Drop for Data {
    fn drop(&mut self) {
        if self.0.sz > 0 {
            // SAFETY: created by `dav1d_data_create`; unref of consumed data is a no-op.
            unsafe { sys::dav1d_data_unref(&mut self.0) };
        }
    }
}

/// libdav1d's `DAV1D_ERR(EAGAIN)`: "feed more data" or "no picture yet".
const AGAIN: c_int = -11;

/// Decodes the first picture of the OBUs `obus`, refusing frames over `max_pixels` before
/// they are allocated.
pub fn decode(obus: &[u8], max_pixels: u64) -> Result<Picture, CodecError> {
    let failed = |what: &str, status: c_int| {
        if status == -12 {
            CodecError::TooLarge(format!("avif {what}: out of memory"))
        } else {
            CodecError::Corrupt(format!("avif {what}: AV1 decoding failed ({status})"))
        }
    };
    // SAFETY: the settings are plain data, initialised by libdav1d.
    let mut settings: sys::Dav1dSettings = unsafe { std::mem::zeroed() };
    unsafe { sys::dav1d_default_settings(&mut settings) };
    settings.n_threads = 1;
    settings.max_frame_delay = 1;
    settings.all_layers = 0;
    settings.frame_size_limit = u32::try_from(max_pixels).unwrap_or(u32::MAX);
    // No logging to stderr: failures are returned.
    settings.logger.callback = std::ptr::null_mut();
    let mut context = Context(std::ptr::null_mut());
    // SAFETY: `settings` is initialised; libdav1d writes the new context to `context.0`.
    let status = unsafe { sys::dav1d_open(&mut context.0, &settings) };
    if status != 0 || context.0.is_null() {
        return Err(failed("decoder", status));
    }
    // SAFETY: the data object is plain data; `dav1d_data_create` allocates `obus.len()`
    // bytes, which are filled before libdav1d reads them.
    let mut data = Data(unsafe { std::mem::zeroed() });
    let buffer = unsafe { sys::dav1d_data_create(&mut data.0, obus.len()) };
    if buffer.is_null() {
        return Err(CodecError::Corrupt("avif: empty AV1 item".to_owned()));
    }
    unsafe { std::ptr::copy_nonoverlapping(obus.as_ptr(), buffer, obus.len()) };
    loop {
        // SAFETY: the context is open; `data` is valid (libdav1d advances it as it consumes).
        let sent = unsafe { sys::dav1d_send_data(context.0, &mut data.0) };
        if sent != 0 && sent != AGAIN {
            return Err(failed("data", sent));
        }
        // SAFETY: the picture is plain data until libdav1d fills it; it is owned by the guard
        // as soon as it is.
        let mut pic: sys::Dav1dPicture = unsafe { std::mem::zeroed() };
        let got = unsafe { sys::dav1d_get_picture(context.0, &mut pic) };
        if got == 0 {
            // Owned from here: released on every path below.
            let picture = Picture { pic };
            if !matches!(picture.bit_depth(), 8 | 10 | 12)
                || picture.width() == 0
                || picture.height() == 0
            {
                return Err(CodecError::Corrupt(format!(
                    "avif: AV1 picture of {}x{} at {} bits",
                    picture.width(),
                    picture.height(),
                    picture.bit_depth()
                )));
            }
            return Ok(picture);
        }
        if got != AGAIN {
            return Err(failed("picture", got));
        }
        // Neither took data nor gave a picture: waiting would not change that.
        if data.0.sz == 0 || sent == AGAIN {
            return Err(CodecError::Corrupt(
                "avif: the AV1 item holds no picture".to_owned(),
            ));
        }
    }
}
