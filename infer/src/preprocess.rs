//! From a drawing or photo of any size to the 28x28 input MNIST digits were made as.
//!
//! MNIST's recipe: find the ink, fit its bounding box into 20x20 keeping the aspect ratio
//! (anti-aliased), then place that in a 28x28 frame so the ink's centre of mass sits at the
//! centre. Following it is what lets a model trained on MNIST read digits drawn elsewhere.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use libm::{floorf, roundf};

use crate::{IMAGE_SIZE, PIXELS};

/// Side of the box the digit is fitted into.
const DIGIT_BOX: usize = 20;
/// Ink below this (of 1.0) is paper: it does not count towards the bounding box.
const INK_THRESHOLD: f32 = 0.1;

/// Why an image could not be turned into a model input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreprocessError {
    /// The buffer length does not match the stated size.
    Size { width: usize, height: usize, channels: usize, len: usize },
    /// Nothing was drawn.
    NoInk,
}

impl fmt::Display for PreprocessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreprocessError::Size { width, height, channels, len } => write!(
                f,
                "a {width}x{height} image with {channels} channel(s) needs {} bytes, got {len}",
                width * height * channels
            ),
            PreprocessError::NoInk => write!(f, "the image has no ink to classify"),
        }
    }
}

impl core::error::Error for PreprocessError {}

/// Ink coverage in [0, 1] of an RGBA buffer (a canvas): dark, opaque pixels are ink, and
/// transparent or white ones are paper, so both a cleared canvas and a white one work.
pub fn ink_from_rgba(rgba: &[u8], width: usize, height: usize) -> Result<Vec<f32>, PreprocessError> {
    check_size(rgba.len(), width, height, 4)?;
    Ok(rgba
        .chunks_exact(4)
        .map(|p| {
            let luminance = (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) / 255.0;
            (p[3] as f32 / 255.0) * (1.0 - luminance)
        })
        .collect())
}

/// Ink coverage in [0, 1] of a grey image, either polarity: the majority tone is the paper.
pub fn ink_from_grey(grey: &[u8], width: usize, height: usize) -> Result<Vec<f32>, PreprocessError> {
    check_size(grey.len(), width, height, 1)?;
    let light_paper = grey.iter().map(|&g| g as u64).sum::<u64>() > 127 * grey.len() as u64;
    Ok(grey.iter().map(|&g| if light_paper { 1.0 - g as f32 / 255.0 } else { g as f32 / 255.0 }).collect())
}

fn check_size(len: usize, width: usize, height: usize, channels: usize) -> Result<(), PreprocessError> {
    let expected = width.checked_mul(height).and_then(|n| n.checked_mul(channels));
    if width == 0 || height == 0 || expected != Some(len) {
        return Err(PreprocessError::Size { width, height, channels, len });
    }
    Ok(())
}

/// The 28x28 MNIST-style grey image (0 = paper, 255 = ink) of an ink map `width` x `height`.
pub fn to_mnist(ink: &[f32], width: usize, height: usize) -> Result<[u8; PIXELS], PreprocessError> {
    check_size(ink.len(), width, height, 1)?;
    let (left, top, right, bottom) = bounding_box(ink, width).ok_or(PreprocessError::NoInk)?;
    let (crop_w, crop_h) = (right - left, bottom - top);

    // Fit the longer side to 20 pixels; the shorter keeps the aspect ratio.
    let scale = DIGIT_BOX as f32 / crop_w.max(crop_h) as f32;
    let out_w = (roundf(crop_w as f32 * scale) as usize).clamp(1, DIGIT_BOX);
    let out_h = (roundf(crop_h as f32 * scale) as usize).clamp(1, DIGIT_BOX);
    let crop: Vec<f32> = (top..bottom).flat_map(|y| ink[y * width + left..y * width + right].iter().copied()).collect();
    let rows = resample_rows(&crop, crop_w, crop_h, out_w);
    let digit = transpose(&resample_rows(&transpose(&rows, out_w, crop_h), crop_h, out_w, out_h), out_h, out_w);

    // Shift so the centre of mass lands on the frame's centre.
    let (mut mass, mut sum_x, mut sum_y) = (0.0f32, 0.0f32, 0.0f32);
    for (i, &v) in digit.iter().enumerate() {
        mass += v;
        sum_x += v * (i % out_w) as f32;
        sum_y += v * (i / out_w) as f32;
    }
    let centre = IMAGE_SIZE as f32 / 2.0;
    let shift_x = roundf(centre - sum_x / mass) as isize;
    let shift_y = roundf(centre - sum_y / mass) as isize;

    let mut frame = [0u8; PIXELS];
    for (i, &v) in digit.iter().enumerate() {
        let x = (i % out_w) as isize + shift_x;
        let y = (i / out_w) as isize + shift_y;
        if (0..IMAGE_SIZE as isize).contains(&x) && (0..IMAGE_SIZE as isize).contains(&y) {
            frame[y as usize * IMAGE_SIZE + x as usize] = roundf(v.clamp(0.0, 1.0) * 255.0) as u8;
        }
    }
    Ok(frame)
}

/// Half-open box `(left, top, right, bottom)` around the pixels with ink, if any.
fn bounding_box(ink: &[f32], width: usize) -> Option<(usize, usize, usize, usize)> {
    let mut found: Option<(usize, usize, usize, usize)> = None;
    for (i, _) in ink.iter().enumerate().filter(|(_, v)| **v > INK_THRESHOLD) {
        let (x, y) = (i % width, i / width);
        found = Some(match found {
            None => (x, y, x + 1, y + 1),
            Some((l, t, r, b)) => (l.min(x), t.min(y), r.max(x + 1), b.max(y + 1)),
        });
    }
    found
}

/// Resizes each row of a `width` x `height` image to `new_width` by area averaging: every
/// output pixel is the mean of the source span it covers, partial pixels weighted by overlap.
fn resample_rows(image: &[f32], width: usize, height: usize, new_width: usize) -> Vec<f32> {
    let step = width as f32 / new_width as f32;
    let mut out = vec![0.0; new_width * height];
    for y in 0..height {
        let row = &image[y * width..(y + 1) * width];
        for ox in 0..new_width {
            let (start, end) = (ox as f32 * step, (ox + 1) as f32 * step);
            let mut total = 0.0;
            let mut x = floorf(start) as usize;
            while (x as f32) < end && x < width {
                let overlap = (end.min(x as f32 + 1.0) - start.max(x as f32)).max(0.0);
                total += row[x] * overlap;
                x += 1;
            }
            out[y * new_width + ox] = total / step;
        }
    }
    out
}

fn transpose(image: &[f32], width: usize, height: usize) -> Vec<f32> {
    let mut out = vec![0.0; image.len()];
    for y in 0..height {
        for x in 0..width {
            out[x * height + y] = image[y * width + x];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    /// A `width` x `height` ink map with a filled rectangle.
    fn rectangle(width: usize, height: usize, x: core::ops::Range<usize>, y: core::ops::Range<usize>) -> Vec<f32> {
        let mut ink = vec![0.0; width * height];
        for row in y {
            for col in x.clone() {
                ink[row * width + col] = 1.0;
            }
        }
        ink
    }

    fn centre_of_mass(frame: &[u8; PIXELS]) -> (f32, f32) {
        let (mut m, mut sx, mut sy) = (0.0, 0.0, 0.0);
        for (i, &v) in frame.iter().enumerate() {
            m += v as f32;
            sx += v as f32 * (i % IMAGE_SIZE) as f32;
            sy += v as f32 * (i / IMAGE_SIZE) as f32;
        }
        (sx / m, sy / m)
    }

    #[test]
    fn fits_a_tall_stroke_into_twenty_pixels_and_centres_it() {
        // A bar 40 wide and 200 tall, far off-centre on a big canvas.
        let ink = rectangle(500, 400, 400..440, 150..350);
        let frame = to_mnist(&ink, 500, 400).unwrap();
        let rows_with_ink =
            (0..IMAGE_SIZE).filter(|y| frame[y * IMAGE_SIZE..(y + 1) * IMAGE_SIZE].iter().any(|&v| v > 0)).count();
        let cols_with_ink = (0..IMAGE_SIZE).filter(|x| (0..IMAGE_SIZE).any(|y| frame[y * IMAGE_SIZE + x] > 0)).count();
        assert_eq!(rows_with_ink, 20);
        assert_eq!(cols_with_ink, 4);
        let (cx, cy) = centre_of_mass(&frame);
        assert!((cx - 14.0).abs() <= 1.0 && (cy - 14.0).abs() <= 1.0, "centre of mass at ({cx}, {cy})");
    }

    #[test]
    fn anti_aliases_when_shrinking() {
        // A one-pixel line in a 60-pixel box comes out as partial, not full, ink.
        let mut ink = rectangle(60, 60, 0..60, 0..1);
        ink[59 * 60 + 59] = 1.0;
        let frame = to_mnist(&ink, 60, 60).unwrap();
        assert!(frame.iter().any(|&v| v > 0 && v < 255), "expected grey edge pixels");
    }

    #[test]
    fn reads_both_canvas_polarities() {
        // Black ink on white, opaque; and black ink on a cleared (transparent) canvas.
        let (w, h) = (50, 50);
        let mut white = vec![255u8; w * h * 4];
        let mut clear = vec![0u8; w * h * 4];
        for y in 10..40 {
            for x in 20..30 {
                let i = (y * w + x) * 4;
                white[i..i + 3].fill(0);
                clear[i..i + 4].copy_from_slice(&[0, 0, 0, 255]);
            }
        }
        let a = to_mnist(&ink_from_rgba(&white, w, h).unwrap(), w, h).unwrap();
        let b = to_mnist(&ink_from_rgba(&clear, w, h).unwrap(), w, h).unwrap();
        assert_eq!(a, b);
        let dark_paper: Vec<u8> = white.chunks_exact(4).map(|p| 255 - p[0]).collect();
        let light_paper: Vec<u8> = white.chunks_exact(4).map(|p| p[0]).collect();
        assert_eq!(ink_from_grey(&dark_paper, w, h).unwrap(), ink_from_grey(&light_paper, w, h).unwrap());
    }

    #[test]
    fn refuses_wrong_sizes_and_empty_drawings() {
        assert!(matches!(ink_from_rgba(&[0; 15], 2, 2), Err(PreprocessError::Size { .. })));
        assert!(matches!(ink_from_rgba(&[], 0, 0), Err(PreprocessError::Size { .. })));
        assert!(matches!(ink_from_grey(&[0; 5], 2, 2), Err(PreprocessError::Size { .. })));
        assert_eq!(to_mnist(&[0.0; 100], 10, 10), Err(PreprocessError::NoInk));
        let message = ink_from_rgba(&[0; 15], 2, 2).unwrap_err().to_string();
        assert!(message.contains("16 bytes") && message.contains("15"), "{message}");
    }
}
