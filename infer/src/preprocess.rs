//! From a drawing or photo of any size to the 28x28 input MNIST digits were made as.
//!
//! First the ink: the paper's level is estimated locally, as the median over windows half the
//! image wide (much wider than a stroke), so grey, tinted or unevenly lit paper is paper; ink is how
//! much darker (or, on dark paper, lighter) a pixel is than the paper around it, relative to
//! the paper's brightness, which cancels uneven light. Variation within the paper's noise is
//! dropped, and the rest is scaled so the stroke's core is full ink, keeping its anti-aliased
//! edges. A clean canvas (pure white paper, a black pen) comes out as its darkness, to within
//! a grey level or two.
//!
//! Then MNIST's recipe: fit the ink's bounding box into 20x20 keeping the aspect ratio
//! (anti-aliased), then place that in a 28x28 frame so the ink's centre of mass sits at the
//! centre. Following it is what lets a model trained on MNIST read digits drawn elsewhere.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use libm::{ceilf, floorf, roundf};

use crate::{IMAGE_SIZE, PIXELS};

/// Side of the box the digit is fitted into.
const DIGIT_BOX: usize = 20;
/// Ink below this (of 1.0) is paper: it does not count towards the bounding box.
const INK_THRESHOLD: f32 = 0.1;
/// The image is cut into this many tiles along each side; the paper's level at a tile is
/// measured over it and its neighbours (a window half the image wide).
const TILES: usize = 6;
/// The percentiles (and 100 minus them) whose distance from a window's median tells on which
/// side of the paper its ink lies.
const SPREAD_PERCENTILE: usize = 90;
/// Ink starts this many (robust) standard deviations of the paper's noise from the paper.
const NOISE_SIGMAS: f32 = 4.0;
/// The share of ink at most as strong as the strokes' core, which becomes full ink: high
/// enough that a canvas's black pen is its core, as MNIST's digits have a solid core.
const CORE_PERCENTILE: usize = 98;
/// The least contrast of a stroke's core, as a share of the paper's brightness, that counts
/// as a digit on the paper.
const MIN_CONTRAST: f32 = 0.1;
/// Added to the paper's grey level before dividing by it, so black paper is no division by
/// zero.
const PAPER_FLOOR: f32 = 8.0;

/// Why an image could not be turned into a model input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreprocessError {
    /// The buffer length does not match the stated size.
    Size { width: usize, height: usize, channels: usize, len: usize },
    /// Nothing was drawn.
    NoInk,
    /// Nothing stands out from the paper by more than its noise and [`MIN_CONTRAST`]: a blank
    /// photo, or ink too faint to find.
    Faint,
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
            PreprocessError::Faint => write!(
                f,
                "no digit stands out from the paper: the image is blank, or its ink differs from the paper by less \
                 than {:.0}% of the paper's brightness, or by less than its noise",
                100.0 * MIN_CONTRAST
            ),
        }
    }
}

impl core::error::Error for PreprocessError {}

/// Which way ink differs from the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Polarity {
    /// Dark ink on light paper.
    DarkInk,
    /// Light ink on dark paper (chalk on a board, a negative).
    LightInk,
}

/// Ink coverage in [0, 1] of an RGBA buffer (a canvas), composited over white paper so that
/// both a cleared (transparent) canvas and a white one work; ink is dark.
pub fn ink_from_rgba(rgba: &[u8], width: usize, height: usize) -> Result<Vec<f32>, PreprocessError> {
    check_size(rgba.len(), width, height, 4)?;
    let grey: Vec<u8> = rgba
        .chunks_exact(4)
        .map(|p| {
            let luminance = 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
            roundf(255.0 - p[3] as f32 / 255.0 * (255.0 - luminance)) as u8
        })
        .collect();
    ink_on_paper(&grey, width, height, Some(Polarity::DarkInk))
}

/// Ink coverage in [0, 1] of a grey image (a photo or scan), either polarity: the tone most
/// windows are mostly made of is the paper.
pub fn ink_from_grey(grey: &[u8], width: usize, height: usize) -> Result<Vec<f32>, PreprocessError> {
    check_size(grey.len(), width, height, 1)?;
    ink_on_paper(grey, width, height, None)
}

/// The ink of a grey image whose size has been checked; `polarity` found from the image when
/// not given. All zero when nothing differs from the paper at all.
fn ink_on_paper(
    grey: &[u8],
    width: usize,
    height: usize,
    polarity: Option<Polarity>,
) -> Result<Vec<f32>, PreprocessError> {
    let tiles = Tiles::new(width, height);
    let windows: Vec<WindowLevels> =
        tiles.window_levels(grey, None).into_iter().map(|w| w.expect("every window holds pixels")).collect();
    let polarity = polarity.unwrap_or_else(|| {
        // Paper is the majority of a window, so it sits on the near side of the median.
        let light_side: u32 = windows.iter().map(|w| u32::from(w.high) - u32::from(w.median)).sum();
        let dark_side: u32 = windows.iter().map(|w| u32::from(w.median) - u32::from(w.low)).sum();
        if light_side <= dark_side { Polarity::DarkInk } else { Polarity::LightInk }
    });
    // A window's median is its paper (unbiased where light falls off across it) while ink
    // covers less than half of it, but ink pulls it its way, and a light gradient makes that
    // pull a bias: so the paper is measured again from the pixels the first look found to be
    // paper, falling back to the first look where a window is all ink.
    let paper_only: Vec<bool> = {
        let first = Standout::measure(grey, &tiles, &windows, polarity);
        first.difference.iter().map(|&d| d <= first.threshold).collect()
    };
    let windows: Vec<WindowLevels> = tiles
        .window_levels(grey, Some(&paper_only))
        .into_iter()
        .zip(windows)
        .map(|(w, first)| w.unwrap_or(first))
        .collect();
    Standout::measure(grey, &tiles, &windows, polarity).ink()
}

/// How far each pixel stands out from the paper around it.
struct Standout {
    /// The paper's grey level at each pixel.
    paper: Vec<f32>,
    /// How much darker (dark ink) or lighter (light ink) than the paper each pixel is, in
    /// grey levels, averaged where the image is noisy.
    difference: Vec<f32>,
    /// The difference above which a pixel is not paper: its noise allows no more.
    threshold: f32,
}

impl Standout {
    fn measure(grey: &[u8], tiles: &Tiles, windows: &[WindowLevels], polarity: Polarity) -> Self {
        let mut paper = tiles.spread(&windows.iter().map(|w| f32::from(w.median)).collect::<Vec<_>>());
        // Extrapolated past the outer windows' centres, a steep change of paper can leave the
        // range of grey levels, and paper below black made ink negative.
        paper.iter_mut().for_each(|level| *level = level.clamp(0.0, 255.0));
        let difference: Vec<f32> = grey
            .iter()
            .zip(&paper)
            .map(|(&g, &paper)| if polarity == Polarity::DarkInk { paper - g as f32 } else { g as f32 - paper })
            .collect();
        // A noisy image is averaged over a box just wide enough to bring its noise down to
        // [`SMOOTHED_NOISE`] (the mean of n pixels has 1/sqrt(n) of their noise), and never
        // wider than a stroke of a digit that fills the frame: the 20x20 digit averages far
        // more pixels.
        let (width, height) = (tiles.width, tiles.height);
        let widest = width.min(height) / SMOOTHING_DIVISOR;
        let unsmoothed = paper_noise(&difference);
        let radius = ceilf((unsmoothed.0 / SMOOTHED_NOISE - 1.0) / 2.0).clamp(0.0, widest as f32) as usize;
        // A clean image (a canvas) needs no averaging, and its noise is already measured.
        let (difference, (noise, paper_level)) = match radius {
            0 => (difference, unsmoothed),
            _ => {
                let smoothed = box_blur(&difference, width, height, radius);
                let noise = paper_noise(&smoothed);
                (smoothed, noise)
            }
        };
        Standout { paper, difference, threshold: paper_level.max(0.0) + NOISE_SIGMAS * noise }
    }

    /// Ink coverage: the difference relative to the paper's brightness, which uneven light
    /// scales alike, fading in from the threshold to twice it so that noise does not haze
    /// the paper while strokes keep their full contrast; then scaled so the strokes' core is
    /// full ink.
    fn ink(&self) -> Result<Vec<f32>, PreprocessError> {
        let threshold = self.threshold;
        let contrast: Vec<f32> = self
            .difference
            .iter()
            .zip(&self.paper)
            .map(|(&d, &paper)| {
                let fade = if threshold > 0.0 { (d - threshold) / threshold } else { d };
                d / (paper + PAPER_FLOOR) * fade.clamp(0.0, 1.0)
            })
            .collect();
        let mut ink: Vec<f32> = contrast.iter().copied().filter(|&c| c > 0.0).collect();
        if ink.is_empty() {
            return Ok(vec![0.0; contrast.len()]);
        }
        // The strokes' core: most ink is no stronger than this.
        let core = percentile(&mut ink, CORE_PERCENTILE);
        if core < MIN_CONTRAST {
            return Err(PreprocessError::Faint);
        }
        Ok(contrast.iter().map(|&c| (c / core).min(1.0)).collect())
    }
}

/// The noise, in grey levels, that averaging brings an image's paper down to.
const SMOOTHED_NOISE: f32 = 2.5;
/// The averaging box is at most `2r + 1` pixels wide, for `r` = the image's shorter side
/// over this.
const SMOOTHING_DIVISOR: usize = 50;

/// The paper's noise (a standard deviation, from the median absolute deviation, as for
/// Gaussian noise) and level among `differences` from it, most of which are paper.
fn paper_noise(differences: &[f32]) -> (f32, f32) {
    let level = median(&mut differences.to_vec());
    let deviation = median(&mut differences.iter().map(|d| (d - level).abs()).collect::<Vec<_>>());
    (1.4826 * deviation, level)
}

/// The mean over the `(2 * radius + 1)`-pixel square around each pixel (clipped at the edges);
/// `Standout::measure` skips it at radius 0.
fn box_blur(values: &[f32], width: usize, height: usize, radius: usize) -> Vec<f32> {
    let pass = |values: &[f32], width: usize, height: usize| {
        // Along each row, then transposed, so that calling it twice blurs both ways.
        let mut out = vec![0.0; values.len()];
        for y in 0..height {
            let row = &values[y * width..(y + 1) * width];
            let mut prefix = Vec::with_capacity(width + 1);
            prefix.push(0.0f64);
            for &v in row {
                prefix.push(prefix[prefix.len() - 1] + f64::from(v));
            }
            for x in 0..width {
                let (from, to) = (x.saturating_sub(radius), (x + radius + 1).min(width));
                out[x * height + y] = ((prefix[to] - prefix[from]) / (to - from) as f64) as f32;
            }
        }
        out
    };
    pass(&pass(values, width, height), height, width)
}

/// The image cut into at most [`TILES`] x [`TILES`] tiles.
struct Tiles {
    width: usize,
    height: usize,
    tile_width: usize,
    tile_height: usize,
    across: usize,
    down: usize,
}

/// Grey levels of one window's pixels: its median (the paper) and a high and a low percentile.
#[derive(Clone, Copy)]
struct WindowLevels {
    low: u8,
    median: u8,
    high: u8,
}

impl Tiles {
    fn new(width: usize, height: usize) -> Self {
        let tile_width = width.div_ceil(TILES.min(width));
        let tile_height = height.div_ceil(TILES.min(height));
        Tiles {
            width,
            height,
            tile_width,
            tile_height,
            across: width.div_ceil(tile_width),
            down: height.div_ceil(tile_height),
        }
    }

    /// The levels of each tile's window (the tile with its neighbours), row by row, over the
    /// pixels `keep` marks (all where `None`); `None` for a window with none of them.
    fn window_levels(&self, grey: &[u8], keep: Option<&[bool]>) -> Vec<Option<WindowLevels>> {
        let mut histograms = vec![[0u32; 256]; self.across * self.down];
        // Tile by tile along each row: a division per pixel to find its tile had been a
        // quarter of a canvas's preprocessing.
        for (y, row) in grey.chunks_exact(self.width).enumerate() {
            let row_tiles = &mut histograms[(y / self.tile_height) * self.across..][..self.across];
            let spans = row.chunks(self.tile_width).zip(row_tiles);
            match keep {
                None => spans.for_each(|(span, histogram)| span.iter().for_each(|&g| histogram[g as usize] += 1)),
                Some(keep) => {
                    let keep_spans = keep[y * self.width..][..self.width].chunks(self.tile_width);
                    for ((span, histogram), keep_span) in spans.zip(keep_spans) {
                        for (&g, _) in span.iter().zip(keep_span).filter(|(_, kept)| **kept) {
                            histogram[g as usize] += 1;
                        }
                    }
                }
            }
        }
        let mut levels = Vec::with_capacity(histograms.len());
        for ty in 0..self.down {
            for tx in 0..self.across {
                let mut window = [0u32; 256];
                for ny in ty.saturating_sub(1)..(ty + 2).min(self.down) {
                    for nx in tx.saturating_sub(1)..(tx + 2).min(self.across) {
                        for (total, count) in window.iter_mut().zip(&histograms[ny * self.across + nx]) {
                            *total += count;
                        }
                    }
                }
                levels.push(window.iter().any(|&count| count > 0).then(|| WindowLevels {
                    low: histogram_percentile(&window, 100 - SPREAD_PERCENTILE),
                    median: histogram_percentile(&window, 50),
                    high: histogram_percentile(&window, SPREAD_PERCENTILE),
                }));
            }
        }
        levels
    }

    /// `per_tile` (one value per tile's window, row by row) at every pixel: bilinear between
    /// the windows' centres, and extrapolated from the outer two beyond them, as light keeps
    /// falling off towards a photo's edges. A window at the edge reaches one tile inwards only,
    /// so its centre is not its tile's.
    fn spread(&self, per_tile: &[f32]) -> Vec<f32> {
        // Each row of windows interpolated across once; a row of pixels then blends two of them.
        let columns: Vec<_> = (0..self.width).map(|x| axis(x, self.tile_width, self.across, self.width)).collect();
        let across: Vec<Vec<f32>> = per_tile
            .chunks_exact(self.across)
            .map(|windows| columns.iter().map(|&(x0, x1, fx)| windows[x0] + fx * (windows[x1] - windows[x0])).collect())
            .collect();
        let mut out = Vec::with_capacity(self.width * self.height);
        for y in 0..self.height {
            let (y0, y1, fy) = axis(y, self.tile_height, self.down, self.height);
            out.extend(across[y0].iter().zip(&across[y1]).map(|(&top, &bottom)| top + fy * (bottom - top)));
        }
        out
    }
}

/// Along one axis: the two windows whose centres bracket pixel `position` (the outer two
/// beyond the outermost centres), and how far it lies from the first towards the second.
fn axis(position: usize, tile: usize, count: usize, extent: usize) -> (usize, usize, f32) {
    let centre = |t: usize| {
        let (first, last) = (t.saturating_sub(1), (t + 1).min(count - 1));
        (first * tile + ((last + 1) * tile).min(extent)) as f32 / 2.0
    };
    if count == 1 {
        return (0, 0, 0.0);
    }
    let at = position as f32 + 0.5;
    let first = (1..count - 1).take_while(|&t| centre(t) <= at).last().unwrap_or(0);
    let (from, to) = (centre(first), centre(first + 1));
    (first, first + 1, if to > from { (at - from) / (to - from) } else { 0.0 })
}

/// The grey level at or below which `percent` of a histogram's pixels lie.
fn histogram_percentile(histogram: &[u32; 256], percent: usize) -> u8 {
    let total: u64 = histogram.iter().map(|&c| u64::from(c)).sum();
    let wanted = (total * percent as u64).div_ceil(100).max(1);
    let mut seen = 0u64;
    for (level, &count) in histogram.iter().enumerate() {
        seen += u64::from(count);
        if seen >= wanted {
            return level as u8;
        }
    }
    255
}

fn median(values: &mut [f32]) -> f32 {
    percentile(values, 50)
}

/// The value at or below which `percent` of `values` lie (reorders them).
fn percentile(values: &mut [f32], percent: usize) -> f32 {
    let rank = ((values.len() * percent).div_ceil(100)).clamp(1, values.len()) - 1;
    *values.select_nth_unstable_by(rank, f32::total_cmp).1
}

fn check_size(len: usize, width: usize, height: usize, channels: usize) -> Result<(), PreprocessError> {
    let expected = width.checked_mul(height).and_then(|n| n.checked_mul(channels));
    if width == 0 || height == 0 || expected != Some(len) {
        return Err(PreprocessError::Size { width, height, channels, len });
    }
    Ok(())
}

/// The model's input for an RGBA canvas, as the page's API takes it: `None` when nothing is
/// drawn; any other bad input is an error.
pub fn canvas_to_mnist(rgba: &[u8], width: usize, height: usize) -> Result<Option<[u8; PIXELS]>, PreprocessError> {
    match to_mnist(&ink_from_rgba(rgba, width, height)?, width, height) {
        Ok(grey) => Ok(Some(grey)),
        Err(PreprocessError::NoInk) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A ready 28x28 grey image given as a slice, checked to be one.
pub fn mnist_input(grey: &[u8]) -> Result<[u8; PIXELS], PreprocessError> {
    check_size(grey.len(), IMAGE_SIZE, IMAGE_SIZE, 1)?;
    Ok(grey.try_into().expect("checked: 784 bytes"))
}

/// The 28x28 MNIST-style grey image (0 = paper, 255 = ink) of an ink map `width` x `height`.
/// Values are coverage: 1 and above is full ink; 0, below, and NaN are none.
pub fn to_mnist(ink: &[f32], width: usize, height: usize) -> Result<[u8; PIXELS], PreprocessError> {
    check_size(ink.len(), width, height, 1)?;
    // Huge or infinite values would take the centre of mass anywhere (found by the fuzzer).
    let ink: Vec<f32> = ink.iter().map(|&v| if v > 0.0 { v.min(1.0) } else { 0.0 }).collect();
    let (left, top, right, bottom) = bounding_box(&ink, width).ok_or(PreprocessError::NoInk)?;
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
    if mass <= 0.0 {
        // Ink that resampling thinned to nothing.
        return Err(PreprocessError::NoInk);
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

/// Half-open box `(left, top, right, bottom)` around the pixels with ink, if any. A pixel
/// with no inked neighbour is a speck of noise, not ink, and does not stretch the box.
fn bounding_box(ink: &[f32], width: usize) -> Option<(usize, usize, usize, usize)> {
    let height = ink.len() / width;
    let inked = |x: usize, y: usize| ink[y * width + x] > INK_THRESHOLD;
    let has_inked_neighbour = |x: usize, y: usize| {
        (y.saturating_sub(1)..(y + 2).min(height))
            .any(|ny| (x.saturating_sub(1)..(x + 2).min(width)).any(|nx| (nx, ny) != (x, y) && inked(nx, ny)))
    };
    let mut found: Option<(usize, usize, usize, usize)> = None;
    for (x, y) in (0..ink.len()).map(|i| (i % width, i / width)) {
        if !inked(x, y) || !has_inked_neighbour(x, y) {
            continue;
        }
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
        // A one-pixel line in a 60-pixel box (a dot in the far corner) comes out as partial,
        // not full, ink.
        let mut ink = rectangle(60, 60, 0..60, 0..1);
        for (x, y) in [(58, 58), (58, 59), (59, 58), (59, 59)] {
            ink[y * 60 + x] = 1.0;
        }
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

    /// Found by the fuzzer (`cargo xtask fuzz preprocess`; the input is in its seeds as
    /// `found-negative-ink`): white paper over black, striped, with grey bands above and
    /// below, so the paper's level extrapolated past the outer windows went below black and
    /// made ink negative. Each character is a grey level: `.` 200, `f` 255, `e` 254, `8` 128,
    /// `6` 63, `4` 40, `3` 43, `7` 7, `0` 0.
    #[test]
    fn paper_that_changes_steeply_gives_ink_within_zero_and_one() {
        let rows = [
            "..............................",
            "..............................",
            "..............................",
            "..............................",
            "..............................",
            "..........44ffffffffffffffffff",
            "ffffffffffffffffffffffffffffff",
            "fffffffffffff000f000f000f000f0",
            "00f000ffffffffffffffffffffffff",
            "ffffffffffffffffffffffffffffff",
            "ffffffffffffffffffffffffffffff",
            "fffffffffffffffffffff000f000f0",
            "00f000f000f000ffffffffffffffff",
            "ffffffffffffffffffffffffffffff",
            "fffffffffeffffffffffffffffffff",
            "ffffffffffffff8600860086008600",
            "000000000000000000000000000000",
            "000000000000000000000000000000",
            "000000000000000000000000000000",
            "000000086008600860086000000000",
            "000000000000000000000000000000",
            "700000000000000000000000000860",
            "086008600860000000000000000000",
            "000000000000000000000000000000",
            "000000000000000008600860086008",
            "600000000000000000000000000000",
            "000000000000000000000000000000",
            "000000086008600860086000000000",
            "000000000000000000000000000000",
            "000000000000000000000000000860",
            "086008600860000000000000000000",
            "000000000000000000000000000030",
            "000000000000000000860086008600",
            "860000000000000000000000000000",
            "000000000000000000000000000000",
            "000000000000000000000000000000",
            "000000000000000000000000086008",
            "60086008600000000000000.......",
            "..............................",
            "..............................",
        ];
        let level = |c: char| match c {
            '.' => 200,
            'f' => 255,
            'e' => 254,
            '8' => 128,
            '6' => 63,
            '4' => 40,
            '3' => 43,
            '7' => 7,
            _ => 0,
        };
        let grey: Vec<u8> = rows.iter().flat_map(|row| row.chars().map(level)).collect();
        let ink = ink_from_grey(&grey, 30, 40).unwrap();
        let outside = ink.iter().filter(|v| !(0.0..=1.0).contains(*v)).count();
        assert_eq!(outside, 0, "{outside} pixels of ink outside [0, 1]");
    }

    /// Found by the fuzzer: an ink map of tiny and huge values put the centre of mass out of
    /// any frame, and the shift overflowed.
    #[test]
    fn ink_maps_of_any_values_come_out_as_a_frame_or_no_ink() {
        for (odd, read_as) in
            [(f32::NAN, 0.0), (f32::INFINITY, 1.0), (f32::NEG_INFINITY, 0.0), (f32::MAX, 1.0), (-1.0, 0.0), (2.0, 1.0)]
        {
            let (mut ink, mut expected) = (rectangle(20, 20, 5..9, 3..17), rectangle(20, 20, 5..9, 3..17));
            ink[4 * 20 + 6] = odd;
            expected[4 * 20 + 6] = read_as;
            assert_eq!(to_mnist(&ink, 20, 20), to_mnist(&expected, 20, 20), "with {odd}");
        }
        let mut specks = vec![0.0; 400];
        specks[0] = 1e-40;
        assert_eq!(to_mnist(&specks, 20, 20), Err(PreprocessError::NoInk));
    }

    #[test]
    fn refuses_wrong_sizes_and_empty_drawings() {
        assert!(matches!(ink_from_rgba(&[0; 15], 2, 2), Err(PreprocessError::Size { .. })));
        assert!(matches!(ink_from_rgba(&[], 0, 0), Err(PreprocessError::Size { .. })));
        assert!(matches!(ink_from_grey(&[0; 5], 2, 2), Err(PreprocessError::Size { .. })));
        assert_eq!(to_mnist(&[0.0; 100], 10, 10), Err(PreprocessError::NoInk));
        let message = ink_from_rgba(&[0; 15], 2, 2).unwrap_err().to_string();
        assert!(message.contains("16 bytes") && message.contains("15"), "{message}");
        assert_eq!(canvas_to_mnist(&[255; 64], 4, 4), Ok(None), "a blank canvas is no drawing, not an error");
        assert!(matches!(canvas_to_mnist(&[255; 63], 4, 4), Err(PreprocessError::Size { .. })));
        let message = mnist_input(&[0; 783]).unwrap_err().to_string();
        assert!(message.contains("28x28") && message.contains("784 bytes, got 783"), "{message}");
        assert_eq!(mnist_input(&[7; PIXELS]), Ok([7; PIXELS]));
    }

    /// A ring (a "0") of ink coverage in [0, 1] with soft edges, on a `side` x `side` frame.
    fn ring(side: usize) -> Vec<f32> {
        let centre = side as f32 / 2.0;
        (0..side * side)
            .map(|i| {
                let (x, y) = ((i % side) as f32 + 0.5 - centre, (i / side) as f32 + 0.5 - centre);
                let from_stroke = (libm::sqrtf(x * x + y * y) - 0.3 * side as f32).abs();
                (0.06 * side as f32 - from_stroke).clamp(0.0, 1.0)
            })
            .collect()
    }

    /// `ink` photographed: on paper of grey level `paper` with ink of level `ink_level`, under
    /// light falling off from 1 to `shadow` across the frame, with noise of about `noise`
    /// levels (a fixed pseudo-random sequence).
    fn photograph(ink: &[f32], side: usize, paper: f32, ink_level: f32, shadow: f32, noise: f32) -> Vec<u8> {
        let mut state = 12345u32;
        ink.iter()
            .enumerate()
            .map(|(i, &v)| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let jitter = (state >> 8) as f32 / (1 << 24) as f32 - 0.5;
                let light = 1.0 - (1.0 - shadow) * (i % side) as f32 / side as f32;
                (light * (paper * (1.0 - v) + ink_level * v) + 3.4 * noise * jitter).clamp(0.0, 255.0) as u8
            })
            .collect()
    }

    /// Mean difference per pixel of two 28x28 images, the second shifted by up to a pixel
    /// either way to fit the first best (a lighter side moves the centre of mass a little).
    fn mean_difference(a: &[u8; PIXELS], b: &[u8; PIXELS]) -> f32 {
        let shifted = |dx: isize, dy: isize| {
            let at = |i: usize| {
                let (x, y) = ((i % IMAGE_SIZE) as isize + dx, (i / IMAGE_SIZE) as isize + dy);
                let inside = (0..IMAGE_SIZE as isize).contains(&x) && (0..IMAGE_SIZE as isize).contains(&y);
                if inside { b[y as usize * IMAGE_SIZE + x as usize] } else { 0 }
            };
            a.iter().enumerate().map(|(i, &a)| (a as f32 - at(i) as f32).abs()).sum::<f32>() / PIXELS as f32
        };
        (-1..=1)
            .flat_map(|dy| (-1..=1).map(move |dx| (dx, dy)))
            .map(|(dx, dy)| shifted(dx, dy))
            .fold(f32::MAX, f32::min)
    }

    #[test]
    fn grey_unevenly_lit_noisy_paper_is_paper() {
        let side = 300;
        let ink = ring(side);
        let clean =
            to_mnist(&ink_from_grey(&photograph(&ink, side, 255.0, 0.0, 1.0, 0.0), side, side).unwrap(), side, side)
                .unwrap();
        let photo = photograph(&ink, side, 170.0, 50.0, 0.45, 12.0);
        let seen = to_mnist(&ink_from_grey(&photo, side, side).unwrap(), side, side).unwrap();
        // Measured as ink against pure white, the darker half of the paper would be ink.
        let difference = mean_difference(&clean, &seen);
        assert!(difference < 12.0, "the photo's 28x28 differs from the clean one's by {difference} levels a pixel");
        let light_on_dark: Vec<u8> = photograph(&ink, side, 40.0, 220.0, 0.6, 6.0);
        let seen = to_mnist(&ink_from_grey(&light_on_dark, side, side).unwrap(), side, side).unwrap();
        let difference = mean_difference(&clean, &seen);
        assert!(difference < 12.0, "light ink on dark paper differs by {difference} levels a pixel");
    }

    #[test]
    fn blank_and_faint_photos_are_refused_by_name() {
        let side = 200;
        let blank = photograph(&vec![0.0; side * side], side, 180.0, 180.0, 0.5, 4.0);
        let faint = photograph(&ring(side), side, 180.0, 175.0, 0.5, 4.0);
        for (name, photo) in [("blank", blank), ("faint", faint)] {
            let found = ink_from_grey(&photo, side, side).and_then(|ink| to_mnist(&ink, side, side));
            assert!(matches!(found, Err(PreprocessError::Faint | PreprocessError::NoInk)), "{name}: {found:?}");
        }
        assert!(PreprocessError::Faint.to_string().contains("no digit stands out from the paper"));
    }

    #[test]
    fn a_noise_speck_does_not_stretch_the_box() {
        let mut ink = rectangle(100, 100, 40..60, 20..80);
        ink[5 * 100 + 5] = 1.0;
        let with_speck = to_mnist(&ink, 100, 100).unwrap();
        ink[5 * 100 + 5] = 0.0;
        assert_eq!(with_speck, to_mnist(&ink, 100, 100).unwrap());
    }
}
