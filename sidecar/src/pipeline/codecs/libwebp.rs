//! libwebp, called directly where the `webp` crate offers no way: scaled decoding of still
//! images (shrink-on-load), frame-by-frame decoding of animations (one canvas in memory at a
//! time, the frame count known before any frame is decoded) and animation encoding with a
//! loop count and exact frame durations.
//!
//! Every `unsafe` block is a plain libwebp call on buffers this module owns or borrows for the
//! call's duration; each libwebp object is freed by a `Drop` guard, on every path.

use std::ffi::c_int;

use libwebp_sys as sys;

use super::CodecError;

/// A decoded still WebP: 8-bit RGB, or RGBA when the bitstream has alpha.
#[derive(Debug)]
pub struct Decoded {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Whether `pixels` is RGBA (else RGB).
    pub alpha: bool,
    /// Packed rows, no padding.
    pub pixels: Vec<u8>,
}

/// Features of a WebP bitstream read from its header: size, alpha, animation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Width (the canvas width of an animation).
    pub width: u32,
    /// Height (the canvas height of an animation).
    pub height: u32,
    /// Whether any pixel may be transparent.
    pub alpha: bool,
    /// Whether this is an animation (decoded with [`AnimDecoder`]).
    pub animated: bool,
}

fn corrupt(what: &str, status: sys::VP8StatusCode) -> CodecError {
    match status {
        sys::VP8StatusCode::VP8_STATUS_OUT_OF_MEMORY => {
            CodecError::TooLarge(format!("webp {what}: out of memory"))
        }
        sys::VP8StatusCode::VP8_STATUS_UNSUPPORTED_FEATURE => {
            CodecError::UnsupportedFormat(format!("webp variant ({what})"))
        }
        status => CodecError::Corrupt(format!("webp {what}: {status:?}")),
    }
}

/// Reads the bitstream features without decoding.
pub fn features(source: &[u8]) -> Result<Features, CodecError> {
    // SAFETY: `WebPBitstreamFeatures` is plain data (zeroed is valid); libwebp reads
    // `source.len()` bytes from `source` and writes only `f`.
    let mut f: sys::WebPBitstreamFeatures = unsafe { std::mem::zeroed() };
    let status = unsafe { sys::WebPGetFeatures(source.as_ptr(), source.len(), &mut f) };
    if !matches!(status, sys::VP8StatusCode::VP8_STATUS_OK) {
        return Err(corrupt("header", status));
    }
    Ok(Features {
        width: u32::try_from(f.width).unwrap_or(0),
        height: u32::try_from(f.height).unwrap_or(0),
        alpha: f.has_alpha != 0,
        animated: f.has_animation != 0,
    })
}

/// Decodes a still WebP, scaled to `scaled` (width, height) by libwebp's rescaler while
/// decoding when given, else at full size. The caller has checked the header's size against
/// the limits; the output buffer is allocated here, at the (scaled) size. An animation is
/// [`CodecError::UnsupportedFormat`]: use [`AnimDecoder`].
pub fn decode(source: &[u8], scaled: Option<(u32, u32)>) -> Result<Decoded, CodecError> {
    let features = features(source)?;
    if features.animated {
        return Err(CodecError::UnsupportedFormat(
            "webp animation decoded as a still".to_owned(),
        ));
    }
    let (width, height) = scaled.unwrap_or((features.width, features.height));
    if width == 0 || height == 0 {
        return Err(CodecError::Corrupt(format!(
            "webp header declares {width}x{height}"
        )));
    }
    let channels = if features.alpha { 4 } else { 3 };
    let stride = width as usize * channels;
    let mut pixels = vec![0u8; stride * height as usize];
    let int = |n: usize| {
        c_int::try_from(n).map_err(|_| CodecError::TooLarge(format!("webp dimension {n}")))
    };
    let mut config = sys::WebPDecoderConfig::new()
        .map_err(|()| CodecError::Encode("webp decoder init".to_owned()))?;
    if scaled.is_some() {
        config.options.use_scaling = 1;
        config.options.scaled_width = int(width as usize)?;
        config.options.scaled_height = int(height as usize)?;
    }
    config.output.colorspace = if features.alpha {
        sys::WEBP_CSP_MODE::MODE_RGBA
    } else {
        sys::WEBP_CSP_MODE::MODE_RGB
    };
    // Decode straight into `pixels`: libwebp allocates no output buffer of its own.
    config.output.is_external_memory = 1;
    config.output.u.RGBA = sys::WebPRGBABuffer {
        rgba: pixels.as_mut_ptr(),
        stride: int(stride)?,
        size: pixels.len(),
    };
    // SAFETY: `config` was initialised by libwebp; its output points at `pixels`, which lives
    // to the end of this function and is `size` bytes long with rows of `stride` bytes;
    // libwebp checks that the (scaled) image fits before writing.
    let status = unsafe { sys::WebPDecode(source.as_ptr(), source.len(), &mut config) };
    // SAFETY: frees only what libwebp allocated itself (nothing for external memory).
    unsafe { sys::WebPFreeDecBuffer(&mut config.output) };
    if !matches!(status, sys::VP8StatusCode::VP8_STATUS_OK) {
        return Err(corrupt("decode", status));
    }
    Ok(Decoded {
        width,
        height,
        alpha: features.alpha,
        pixels,
    })
}

/// An animated WebP, decoded one frame at a time: libwebp composes each frame onto the canvas
/// (blending and disposal), so only the canvas and its previous state are ever in memory.
pub struct AnimDecoder<'a> {
    dec: *mut sys::WebPAnimDecoder,
    info: sys::WebPAnimInfo,
    /// The frame's end time of the previous frame, in ms, to turn end times into durations.
    last_end: i32,
    _source: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> AnimDecoder<'a> {
    /// Parses the container (frame count, canvas, loop count); decodes no frame. The canvas
    /// size must have been checked against the limits first: libwebp allocates two canvases.
    pub fn new(source: &'a [u8]) -> Result<AnimDecoder<'a>, CodecError> {
        // SAFETY: plain-data options, initialised by libwebp.
        let mut options: sys::WebPAnimDecoderOptions = unsafe { std::mem::zeroed() };
        if unsafe { sys::WebPAnimDecoderOptionsInit(&mut options) } == 0 {
            return Err(CodecError::Encode("webp animation decoder init".to_owned()));
        }
        options.color_mode = sys::WEBP_CSP_MODE::MODE_RGBA;
        options.use_threads = 0;
        let data = sys::WebPData {
            bytes: source.as_ptr(),
            size: source.len(),
        };
        // SAFETY: libwebp keeps a pointer to `source`, which outlives the decoder (`'a`).
        let dec = unsafe { sys::WebPAnimDecoderNew(&data, &options) };
        if dec.is_null() {
            return Err(CodecError::Corrupt(
                "webp animation: unreadable container".to_owned(),
            ));
        }
        let mut decoder = AnimDecoder {
            dec,
            info: sys::WebPAnimInfo::default(),
            last_end: 0,
            _source: std::marker::PhantomData,
        };
        // SAFETY: `dec` is a live decoder; `info` is plain data it fills.
        if unsafe { sys::WebPAnimDecoderGetInfo(decoder.dec, &mut decoder.info) } == 0 {
            return Err(CodecError::Corrupt(
                "webp animation: unreadable header".to_owned(),
            ));
        }
        Ok(decoder)
    }

    /// Canvas width and height.
    pub fn canvas(&self) -> (u32, u32) {
        (self.info.canvas_width, self.info.canvas_height)
    }

    /// The number of frames, from the container.
    pub fn frame_count(&self) -> u32 {
        self.info.frame_count
    }

    /// The loop count (0 = forever).
    pub fn loop_count(&self) -> u32 {
        self.info.loop_count
    }

    /// Decodes the next frame: the whole canvas as RGBA, and the frame's duration in ms.
    /// `None` after the last frame.
    pub fn next_frame(&mut self) -> Result<Option<(&[u8], u32)>, CodecError> {
        // SAFETY: `dec` is a live decoder.
        if unsafe { sys::WebPAnimDecoderHasMoreFrames(self.dec) } == 0 {
            return Ok(None);
        }
        let mut buf: *mut u8 = std::ptr::null_mut();
        let mut end: c_int = 0;
        // SAFETY: on success libwebp points `buf` at its canvas, canvas_width × canvas_height
        // × 4 bytes, valid until the next call on the decoder (which needs `&mut self`, so the
        // returned slice cannot outlive it).
        if unsafe { sys::WebPAnimDecoderGetNext(self.dec, &mut buf, &mut end) } == 0
            || buf.is_null()
        {
            return Err(CodecError::Corrupt(
                "webp animation: undecodable frame".to_owned(),
            ));
        }
        let len = self.info.canvas_width as usize * self.info.canvas_height as usize * 4;
        let canvas = unsafe { std::slice::from_raw_parts(buf, len) };
        let duration = u32::try_from(end.saturating_sub(self.last_end)).unwrap_or(0);
        self.last_end = end;
        Ok(Some((canvas, duration)))
    }
}

impl Drop for AnimDecoder<'_> {
    fn drop(&mut self) {
        // SAFETY: `dec` came from `WebPAnimDecoderNew` and is deleted once.
        unsafe { sys::WebPAnimDecoderDelete(self.dec) };
    }
}

/// One frame to encode: the whole canvas, RGB or RGBA, shown for `duration_ms`.
pub struct Frame<'a> {
    /// Packed rows, RGB or RGBA per [`AnimEncoder`]'s `alpha`.
    pub pixels: &'a [u8],
    /// How long the frame shows, in ms.
    pub duration_ms: u32,
}

/// Encodes an animated WebP: lossy at `quality`, every frame `width`×`height`, looping
/// `loop_count` times (0 = forever); frame durations are kept exactly (the last one too).
pub fn encode_animation(
    width: u32,
    height: u32,
    alpha: bool,
    frames: &[Frame<'_>],
    loop_count: u32,
    quality: u8,
) -> Result<Vec<u8>, CodecError> {
    let fail = |what: &str| CodecError::Encode(format!("webp animation: {what}"));
    let int = |n: u32| c_int::try_from(n).map_err(|_| fail("dimension out of range"));
    let (w, h) = (int(width)?, int(height)?);
    let channels = if alpha { 4 } else { 3 };
    let config = sys::WebPConfig::new_with_preset(
        sys::WebPPreset::WEBP_PRESET_DEFAULT,
        f32::from(quality.clamp(1, 100)),
    )
    .map_err(|()| fail("config"))?;
    // SAFETY: plain-data options, initialised by libwebp.
    let mut options: sys::WebPAnimEncoderOptions = unsafe { std::mem::zeroed() };
    if unsafe { sys::WebPAnimEncoderOptionsInitInternal(&mut options, sys::WebPGetMuxABIVersion()) }
        == 0
    {
        return Err(fail("options"));
    }
    options.anim_params.loop_count = c_int::try_from(loop_count).unwrap_or(0);
    // SAFETY: valid options; the encoder is owned by the guard below.
    let enc =
        unsafe { sys::WebPAnimEncoderNewInternal(w, h, &options, sys::WebPGetMuxABIVersion()) };
    if enc.is_null() {
        return Err(fail("encoder"));
    }
    struct Encoder(*mut sys::WebPAnimEncoder);
    impl Drop for Encoder {
        fn drop(&mut self) {
            // SAFETY: created by `WebPAnimEncoderNew`, deleted once.
            unsafe { sys::WebPAnimEncoderDelete(self.0) };
        }
    }
    let enc = Encoder(enc);
    let mut timestamp: c_int = 0;
    for frame in frames {
        if frame.pixels.len() != width as usize * height as usize * channels {
            return Err(fail("frame size"));
        }
        let mut picture = sys::WebPPicture::new().map_err(|()| fail("picture"))?;
        picture.use_argb = 1;
        picture.width = w;
        picture.height = h;
        struct Picture(sys::WebPPicture);
        impl Drop for Picture {
            fn drop(&mut self) {
                // SAFETY: frees what the import allocated (nothing if it failed).
                unsafe { sys::WebPPictureFree(&mut self.0) };
            }
        }
        let mut picture = Picture(picture);
        let stride = int(width * channels as u32)?;
        // SAFETY: `pixels` holds `height` rows of `stride` bytes (checked above); libwebp
        // copies them into the picture's own buffer.
        let imported = unsafe {
            if alpha {
                sys::WebPPictureImportRGBA(&mut picture.0, frame.pixels.as_ptr(), stride)
            } else {
                sys::WebPPictureImportRGB(&mut picture.0, frame.pixels.as_ptr(), stride)
            }
        };
        if imported == 0 {
            return Err(fail("import"));
        }
        // SAFETY: live encoder, imported picture, valid config; libwebp copies what it keeps.
        if unsafe { sys::WebPAnimEncoderAdd(enc.0, &mut picture.0, timestamp, &config) } == 0 {
            return Err(fail("frame"));
        }
        timestamp = timestamp.saturating_add(c_int::try_from(frame.duration_ms).unwrap_or(0));
    }
    // The end time of the last frame, which gives it its duration.
    // SAFETY: a null frame marks the end, as libwebp documents.
    if unsafe { sys::WebPAnimEncoderAdd(enc.0, std::ptr::null_mut(), timestamp, std::ptr::null()) }
        == 0
    {
        return Err(fail("end"));
    }
    let mut data = sys::WebPData::default();
    // SAFETY: live encoder; on success `data` owns a libwebp buffer, freed below.
    if unsafe { sys::WebPAnimEncoderAssemble(enc.0, &mut data) } == 0 {
        return Err(fail("assemble"));
    }
    // SAFETY: `data` holds `size` bytes from libwebp, copied out and then freed once.
    let bytes = unsafe { std::slice::from_raw_parts(data.bytes, data.size) }.to_vec();
    unsafe { sys::WebPDataClear(&mut data) };
    Ok(bytes)
}
