//! Random distortion of digits: a change of stroke thickness, an affine map (rotation, scale,
//! shear, translation), an elastic warp (a smooth random displacement field, as in Simard
//! et al., 2003) and an erased rectangle (random erasing, Zhong et al., 2017); and mixup
//! (Zhang et al., 2018), which blends a whole batch with itself.
//!
//! Every draw comes from a generator keyed by (seed, epoch, image index), so an image's
//! distortion depends on nothing else: not on batch order, threads, or where a resumed run
//! started. A batch's blend is keyed by (seed, epoch, the batch's first position) alike.

use burn::config::Config;
use rand::{RngExt, SeedableRng, rngs::StdRng};

use infer::{IMAGE_SIZE, PIXELS};

/// How far each distortion may go; every parameter is drawn uniformly in its range.
#[derive(Config, Debug, PartialEq)]
pub struct AugmentConfig {
    /// Rotation, degrees either way.
    #[config(default = 12.0)]
    pub max_rotation_deg: f32,
    /// Scale factor in `[1 - max_scale, 1 + max_scale]`.
    #[config(default = 0.12)]
    pub max_scale: f32,
    /// Horizontal shear angle, degrees either way.
    #[config(default = 10.0)]
    pub max_shear_deg: f32,
    /// Translation, pixels either way along each axis.
    #[config(default = 2.5)]
    pub max_shift_px: f32,
    /// Strength of the elastic warp: the scale of a displacement field of uniform noise in
    /// [-1, 1] blurred by a Gaussian; 0 turns the warp off.
    #[config(default = 0.0)]
    pub elastic_alpha: f32,
    /// Width of that Gaussian, pixels: larger is smoother.
    #[config(default = 4.0)]
    pub elastic_sigma: f32,
    /// Stroke thickness change, drawn in `[-max_thickness, max_thickness]` (at most 1): each
    /// pixel moves that fraction of the way toward the ink one pixel thicker (> 0) or thinner
    /// (< 0); 0 turns it off. 0.6 since trial 8 (docs/accuracy-trials.md, "Trial 8").
    #[config(default = 0.6)]
    pub max_thickness: f32,
    /// Chance that a rectangle of the distorted image is erased to paper: a broken or
    /// occluded stroke; 0 turns it off.
    #[config(default = 0.0)]
    pub erase_probability: f32,
    /// Largest erased rectangle as a fraction of the image's area; the area is drawn between
    /// 2% and this, the ratio of its sides between 1:3 and 3:1.
    #[config(default = 0.2)]
    pub max_erase_area: f32,
    /// Mixup: each distorted batch is blended with itself in reverse order, its images and
    /// their labels alike, with a weight drawn from Beta(alpha, alpha) (near 0 or 1 for a
    /// small alpha: mostly one digit with a faint other); 0 turns it off.
    #[config(default = 0.0)]
    pub mixup_alpha: f32,
}

impl AugmentConfig {
    /// No distortion at all.
    pub fn none() -> AugmentConfig {
        AugmentConfig::new()
            .with_max_rotation_deg(0.0)
            .with_max_scale(0.0)
            .with_max_shear_deg(0.0)
            .with_max_shift_px(0.0)
            .with_elastic_alpha(0.0)
            .with_max_thickness(0.0)
            .with_erase_probability(0.0)
            .with_mixup_alpha(0.0)
    }

    /// The first setting that no distortion can be drawn with, named with its value: a
    /// negative or infinite range, a thickness or chance outside [0, 1], a scale of the whole
    /// image or more.
    pub fn check(&self) -> Result<(), String> {
        let at_least_zero = [
            ("max_rotation_deg", self.max_rotation_deg),
            ("max_shear_deg", self.max_shear_deg),
            ("max_shift_px", self.max_shift_px),
            ("elastic_alpha", self.elastic_alpha),
            ("mixup_alpha", self.mixup_alpha),
        ];
        for (name, value) in at_least_zero {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{name} must be a finite number of at least 0, not {value}"));
            }
        }
        if !(self.elastic_sigma.is_finite() && self.elastic_sigma > 0.0) {
            return Err(format!("elastic_sigma must be a finite number above 0, not {}", self.elastic_sigma));
        }
        if !(0.0..1.0).contains(&self.max_scale) {
            return Err(format!("max_scale must be in [0, 1), not {}", self.max_scale));
        }
        let fractions = [
            ("max_thickness", self.max_thickness),
            ("erase_probability", self.erase_probability),
            ("max_erase_area", self.max_erase_area),
        ];
        for (name, value) in fractions {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("{name} must be in [0, 1], not {value}"));
            }
        }
        Ok(())
    }

    /// Every range, the warp's strength, the erasing chance and mixup's alpha times `strength`
    /// (1 leaves the config as it is).
    pub fn scaled(&self, strength: f32) -> AugmentConfig {
        AugmentConfig {
            max_rotation_deg: strength * self.max_rotation_deg,
            max_scale: strength * self.max_scale,
            max_shear_deg: strength * self.max_shear_deg,
            max_shift_px: strength * self.max_shift_px,
            elastic_alpha: strength * self.elastic_alpha,
            elastic_sigma: self.elastic_sigma,
            max_thickness: strength * self.max_thickness,
            erase_probability: strength * self.erase_probability,
            max_erase_area: self.max_erase_area,
            mixup_alpha: strength * self.mixup_alpha,
        }
    }
}

/// One drawn distortion of an image: its thickness change, then its affine part, then its
/// elastic part, then the erased rectangle.
#[derive(Debug, Clone, PartialEq)]
pub struct Distortion {
    /// In [-1, 1]: how far the ink moves toward its dilation (> 0) or erosion (< 0).
    pub thickness: f32,
    pub affine: Affine,
    /// Displacement (x, y) of each output pixel, row-major; `None` when the warp is off.
    pub elastic: Option<Vec<[f32; 2]>>,
    /// Output pixels set to paper; `None` when nothing is erased.
    pub erased: Option<Rect>,
}

impl Distortion {
    pub const NONE: Distortion = Distortion { thickness: 0.0, affine: Affine::IDENTITY, elastic: None, erased: None };

    /// The distortion of image `index` in `epoch` for this `seed`.
    pub fn draw(config: &AugmentConfig, seed: u64, epoch: usize, index: usize) -> Distortion {
        let mut rng = StdRng::seed_from_u64(key(seed, epoch as u64, index as u64));
        let affine = Affine::draw(config, &mut rng);
        let elastic = (config.elastic_alpha > 0.0).then(|| elastic_field(config, &mut rng));
        // Drawn last, and only when on, so that the other draws stay what they were without it.
        let limit = config.max_thickness.min(1.0);
        let thickness = if limit > 0.0 { rng.random_range(-limit..=limit) } else { 0.0 };
        // Likewise after the thickness.
        let chance = config.erase_probability.min(1.0);
        let erased = (chance > 0.0 && rng.random_bool(f64::from(chance))).then(|| Rect::draw(config, &mut rng));
        Distortion { thickness, affine, elastic, erased }
    }

    /// Resamples a 28x28 grey image (bilinear, zero outside), writing `map(grey)` for each
    /// output pixel. An output pixel is first displaced by the elastic field, then carried
    /// back through the inverse of the affine map to where it is read in `image`.
    pub fn apply(&self, image: &[u8], out: &mut [f32], map: impl Fn(u8) -> f32) {
        let thickened;
        let image = if self.thickness == 0.0 {
            image
        } else {
            thickened = change_thickness(image, self.thickness);
            &thickened
        };
        let n = IMAGE_SIZE;
        let centre = (n as f32 - 1.0) / 2.0;
        let [[a, b], [c, d]] = self.affine.matrix;
        let det = a * d - b * c;
        let inv = [[d / det, -b / det], [-c / det, a / det]];
        let pixel = |x, y| f32::from(grey_at(image, x, y));
        for oy in 0..n {
            for ox in 0..n {
                let [ex, ey] = self.elastic.as_ref().map_or([0.0, 0.0], |field| field[oy * n + ox]);
                let dx = ox as f32 + ex - centre - self.affine.shift[0];
                let dy = oy as f32 + ey - centre - self.affine.shift[1];
                let sx = inv[0][0] * dx + inv[0][1] * dy + centre;
                let sy = inv[1][0] * dx + inv[1][1] * dy + centre;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = (x0 as isize, y0 as isize);
                let top = pixel(x0, y0) * (1.0 - fx) + pixel(x0 + 1, y0) * fx;
                let bottom = pixel(x0, y0 + 1) * (1.0 - fx) + pixel(x0 + 1, y0 + 1) * fx;
                let grey = top * (1.0 - fy) + bottom * fy;
                out[oy * n + ox] = map(grey.round().clamp(0.0, 255.0) as u8);
            }
        }
        if let Some(Rect { x, y, width, height }) = self.erased {
            let paper = map(0);
            for row in out[y * n..(y + height) * n].chunks_exact_mut(n) {
                row[x..x + width].fill(paper);
            }
        }
    }
}

/// A rectangle of pixels inside the 28x28 image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

impl Rect {
    /// An erased rectangle: area uniform in [2%, `max_erase_area`] of the image, the ratio of
    /// its sides log-uniform in [1/3, 3], its place uniform among those inside the image.
    fn draw(config: &AugmentConfig, rng: &mut StdRng) -> Rect {
        const MIN_AREA: f32 = 0.02;
        let area = PIXELS as f32 * rng.random_range(MIN_AREA..=config.max_erase_area.clamp(MIN_AREA, 1.0));
        let spread = 3f32.ln();
        let ratio = rng.random_range(-spread..=spread).exp();
        let side = |length: f32| (length.round() as usize).clamp(1, IMAGE_SIZE);
        let (width, height) = (side((area * ratio).sqrt()), side((area / ratio).sqrt()));
        let x = rng.random_range(0..=IMAGE_SIZE - width);
        let y = rng.random_range(0..=IMAGE_SIZE - height);
        Rect { x, y, width, height }
    }
}

impl From<Affine> for Distortion {
    fn from(affine: Affine) -> Distortion {
        Distortion { affine, ..Distortion::NONE }
    }
}

/// The grey value at `(x, y)` of a 28x28 image; paper (0) outside it.
fn grey_at(image: &[u8], x: isize, y: isize) -> u8 {
    let n = IMAGE_SIZE as isize;
    if (0..n).contains(&x) && (0..n).contains(&y) { image[(y * n + x) as usize] } else { 0 }
}

/// Moves each pixel `amount` of the way toward the largest (`amount > 0`: a thicker stroke) or
/// smallest (`amount < 0`: a thinner one) value of itself and its four neighbours: grey
/// dilation or erosion by a one-pixel cross, the gentlest step a 28x28 stroke allows.
fn change_thickness(image: &[u8], amount: f32) -> Vec<u8> {
    let n = IMAGE_SIZE as isize;
    let at = |x, y| grey_at(image, x, y);
    let mut out = Vec::with_capacity(image.len());
    for y in 0..n {
        for x in 0..n {
            let here = at(x, y);
            let cross = [at(x - 1, y), at(x + 1, y), at(x, y - 1), at(x, y + 1)];
            let target = if amount > 0.0 {
                cross.into_iter().fold(here, u8::max)
            } else {
                cross.into_iter().fold(here, u8::min)
            };
            let moved = here as f32 + amount.abs() * (target as f32 - here as f32);
            out.push(moved.round() as u8);
        }
    }
    out
}

/// Uniform noise in [-1, 1] per pixel and axis, blurred by a normalised Gaussian (zero beyond
/// the border) and scaled by `elastic_alpha`.
fn elastic_field(config: &AugmentConfig, rng: &mut StdRng) -> Vec<[f32; 2]> {
    let n = IMAGE_SIZE;
    let sigma = config.elastic_sigma.max(0.1);
    let radius = (3.0 * sigma).ceil() as isize;
    let weights: Vec<f32> = (-radius..=radius).map(|t| (-(t * t) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = weights.iter().sum();
    let weights: Vec<f32> = weights.iter().map(|w| w / total).collect();
    let noise: Vec<[f32; 2]> =
        (0..n * n).map(|_| [rng.random_range(-1.0..=1.0), rng.random_range(-1.0..=1.0)]).collect();
    // Separable blur: along rows, then along columns.
    let blur = |field: &[[f32; 2]], step: [usize; 2]| -> Vec<[f32; 2]> {
        let mut out = vec![[0.0f32; 2]; n * n];
        for y in 0..n {
            for x in 0..n {
                let mut sum = [0.0f32; 2];
                for (t, w) in (-radius..=radius).zip(&weights) {
                    let (sx, sy) = (x as isize + t * step[0] as isize, y as isize + t * step[1] as isize);
                    if (0..n as isize).contains(&sx) && (0..n as isize).contains(&sy) {
                        let value = field[sy as usize * n + sx as usize];
                        sum = [sum[0] + w * value[0], sum[1] + w * value[1]];
                    }
                }
                out[y * n + x] = sum;
            }
        }
        out
    };
    let smooth = blur(&blur(&noise, [1, 0]), [0, 1]);
    smooth.into_iter().map(|[x, y]| [config.elastic_alpha * x, config.elastic_alpha * y]).collect()
}

/// One drawn distortion: a 2x2 linear map and a shift, applied about the image centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    matrix: [[f32; 2]; 2],
    shift: [f32; 2],
}

impl Affine {
    pub const IDENTITY: Affine = Affine { matrix: [[1.0, 0.0], [0.0, 1.0]], shift: [0.0, 0.0] };

    /// Draws the affine part of a distortion.
    fn draw(config: &AugmentConfig, rng: &mut StdRng) -> Affine {
        let mut symmetric = |limit: f32| if limit > 0.0 { rng.random_range(-limit..=limit) } else { 0.0 };
        let angle = symmetric(config.max_rotation_deg).to_radians();
        let scale = 1.0 + symmetric(config.max_scale);
        let shear = symmetric(config.max_shear_deg).to_radians().tan();
        let shift = [symmetric(config.max_shift_px), symmetric(config.max_shift_px)];
        let (sin, cos) = angle.sin_cos();
        // rotation * shear * scale, in (x, y) coordinates.
        let matrix = [[scale * cos, scale * (cos * shear - sin)], [scale * sin, scale * (sin * shear + cos)]];
        Affine { matrix, shift }
    }
}

/// The weight of a batch's own images and labels in its mixup blend (the rest goes to the batch
/// in reverse order), for the batch that starts at `position` of `epoch`'s order; `None` when
/// mixup is off.
pub fn mix_weight(config: &AugmentConfig, seed: u64, epoch: usize, position: usize) -> Option<f32> {
    if config.mixup_alpha <= 0.0 {
        return None;
    }
    // Apart from every image's generator, whose keys count up from 0.
    let mut rng = StdRng::seed_from_u64(key(seed, epoch as u64, u64::MAX - position as u64));
    let beta = rand_distr::Beta::new(config.mixup_alpha, config.mixup_alpha).expect("alpha is positive and finite");
    Some(rng.sample(beta))
}

/// SplitMix64 over the three inputs: nearby keys give unrelated generators.
fn key(seed: u64, epoch: u64, index: u64) -> u64 {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    mix(mix(mix(seed) ^ epoch) ^ index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixup_weights_follow_a_symmetric_beta_and_are_off_at_zero() {
        let config = AugmentConfig::new().with_mixup_alpha(0.2);
        let weights: Vec<f32> = (0..4000).map(|position| mix_weight(&config, 3, 1, position).unwrap()).collect();
        assert!(weights.iter().all(|weight| (0.0..=1.0).contains(weight)));
        let mean = weights.iter().sum::<f32>() / weights.len() as f32;
        assert!((mean - 0.5).abs() < 0.03, "mean {mean}");
        // Beta(0.2, 0.2) puts 67.3% of its mass within 0.1 of 0 or 1.
        let near_an_end = weights.iter().filter(|&&weight| !(0.1..=0.9).contains(&weight)).count() as f32 / 4000.0;
        assert!((0.64..0.71).contains(&near_an_end), "{near_an_end}");
        assert_eq!(mix_weight(&config, 3, 1, 17), mix_weight(&config, 3, 1, 17));
        assert_ne!(mix_weight(&config, 3, 1, 17), mix_weight(&config, 3, 2, 17));
        assert_eq!(mix_weight(&AugmentConfig::new(), 3, 1, 17), None);
    }

    fn square() -> Vec<u8> {
        let mut image = vec![0u8; PIXELS];
        for y in 10..18 {
            for x in 10..18 {
                image[y * IMAGE_SIZE + x] = 255;
            }
        }
        image
    }

    #[test]
    fn identity_reproduces_the_image() {
        let image = square();
        let mut out = vec![0.0; PIXELS];
        Distortion::NONE.apply(&image, &mut out, |g| g as f32);
        assert!(out.iter().zip(&image).all(|(o, &i)| *o == i as f32));
    }

    #[test]
    fn draws_depend_only_on_seed_epoch_and_index() {
        let config = AugmentConfig::new();
        let config = config.with_elastic_alpha(30.0);
        let a = Distortion::draw(&config, 7, 3, 100);
        assert!(a.elastic.is_some());
        assert_eq!(a, Distortion::draw(&config, 7, 3, 100));
        assert_ne!(a, Distortion::draw(&config, 7, 4, 100));
        assert_ne!(a, Distortion::draw(&config, 7, 3, 101));
        assert_ne!(a, Distortion::draw(&config, 8, 3, 100));
    }

    #[test]
    fn scaling_by_one_keeps_the_draws_and_by_zero_draws_no_distortion() {
        let config = AugmentConfig::new().with_elastic_alpha(30.0);
        assert_eq!(Distortion::draw(&config.scaled(1.0), 5, 2, 9), Distortion::draw(&config, 5, 2, 9));
        let none = Distortion::draw(&config.scaled(0.0), 5, 2, 9);
        assert_eq!(none.affine, Affine::IDENTITY);
        assert!(none.elastic.is_none());
    }

    #[test]
    fn thickness_grows_or_shrinks_the_ink_by_the_amount_drawn() {
        let image = square();
        let ink = |amount: f32| -> f32 {
            let mut out = vec![0.0; PIXELS];
            Distortion { thickness: amount, ..Distortion::NONE }.apply(&image, &mut out, |g| g as f32);
            out.iter().sum::<f32>() / 255.0
        };
        // The 8x8 square: a full dilation by the cross adds a pixel along each side (+32), a
        // full erosion takes one off each side (-28), and half of either goes half as far.
        assert_eq!(ink(0.0), 64.0);
        assert_eq!(ink(1.0), 96.0);
        assert_eq!(ink(-1.0), 36.0);
        assert!((ink(0.5) - 80.0).abs() < 0.2, "{}", ink(0.5));
        assert!((ink(-0.5) - 50.0).abs() < 0.2, "{}", ink(-0.5));
    }

    #[test]
    fn thickness_is_drawn_only_when_asked_and_leaves_the_other_draws_alone() {
        let off = AugmentConfig::new().with_elastic_alpha(30.0).with_max_thickness(0.0);
        let on = off.clone().with_max_thickness(0.5);
        let (a, b) = (Distortion::draw(&off, 4, 2, 8), Distortion::draw(&on, 4, 2, 8));
        assert_eq!(a.thickness, 0.0);
        assert!(b.thickness != 0.0 && b.thickness.abs() <= 0.5, "{}", b.thickness);
        assert_eq!((a.affine, a.elastic), (b.affine, b.elastic));
    }

    #[test]
    fn erasing_is_drawn_only_when_asked_and_leaves_the_other_draws_alone() {
        let off = AugmentConfig::new().with_elastic_alpha(30.0);
        let on = off.clone().with_erase_probability(1.0);
        let (a, b) = (Distortion::draw(&off, 4, 2, 8), Distortion::draw(&on, 4, 2, 8));
        assert_eq!(a.erased, None);
        assert!(b.erased.is_some());
        assert_eq!((a.thickness, a.affine, a.elastic), (b.thickness, b.affine, b.elastic));
        let half = off.with_erase_probability(0.5);
        let erased = (0..1000).filter(|&index| Distortion::draw(&half, 4, 2, index).erased.is_some()).count();
        assert!((400..600).contains(&erased), "{erased} of 1000 erased at probability 0.5");
    }

    #[test]
    fn erased_rectangles_lie_inside_the_image_at_the_areas_asked() {
        let config = AugmentConfig::none().with_erase_probability(1.0).with_max_erase_area(0.2);
        for index in 0..500 {
            let Rect { x, y, width, height } = Distortion::draw(&config, 9, 1, index).erased.expect("erased");
            assert!(x + width <= IMAGE_SIZE && y + height <= IMAGE_SIZE, "{index}: {x},{y} {width}x{height}");
            // Rounding each side moves the area by up to about a side's length.
            let area = (width * height) as f32 / PIXELS as f32;
            assert!((0.01..=0.25).contains(&area), "{index}: area {area}");
            assert!((width as f32 / height as f32) < 4.0 && (height as f32 / width as f32) < 4.0);
        }
    }

    #[test]
    fn erasing_sets_the_rectangle_to_paper_and_nothing_else() {
        let image = vec![200u8; PIXELS];
        let mut out = vec![0.0; PIXELS];
        let erased = Rect { x: 3, y: 5, width: 4, height: 2 };
        Distortion { erased: Some(erased), ..Distortion::NONE }.apply(&image, &mut out, |g| g as f32 + 1.0);
        for (i, &value) in out.iter().enumerate() {
            let (x, y) = (i % IMAGE_SIZE, i / IMAGE_SIZE);
            let inside = (3..7).contains(&x) && (5..7).contains(&y);
            assert_eq!(value, if inside { 1.0 } else { 201.0 }, "pixel ({x}, {y})");
        }
    }

    #[test]
    fn a_shift_moves_the_ink() {
        let image = square();
        let mut out = vec![0.0; PIXELS];
        let right = Affine { shift: [3.0, 0.0], ..Affine::IDENTITY };
        Distortion::from(right).apply(&image, &mut out, |g| g as f32);
        assert_eq!(out[14 * IMAGE_SIZE + 20], 255.0);
        assert_eq!(out[14 * IMAGE_SIZE + 11], 0.0);
    }

    #[test]
    fn distortions_stay_within_bounds_and_keep_most_ink() {
        let image = square();
        let ink: f32 = image.iter().map(|&g| g as f32).sum();
        // The affine part's bounds; the thickness change, which moves the ink by design, has
        // its own test above.
        let config = AugmentConfig::new().with_max_thickness(0.0);
        for index in 0..200 {
            let mut out = vec![0.0; PIXELS];
            Distortion::draw(&config, 1, 0, index).apply(&image, &mut out, |g| g as f32);
            let moved: f32 = out.iter().sum();
            // Scale is at most 12% either way, so area changes by under 30%.
            assert!((0.7 * ink..1.3 * ink).contains(&moved), "index {index}: {moved} vs {ink}");
        }
    }

    #[test]
    fn the_elastic_field_is_smooth_and_as_strong_as_asked() {
        let config = AugmentConfig::none().with_elastic_alpha(34.0).with_elastic_sigma(4.0);
        let field = Distortion::draw(&config, 3, 1, 5).elastic.expect("warp on");
        let rms = (field.iter().map(|[x, y]| x * x + y * y).sum::<f32>() / field.len() as f32).sqrt();
        // Blurred uniform noise has a standard deviation of about 0.577 / (2 sqrt(pi) sigma)
        // per axis in the interior, so about 1.9 pixels of displacement here (less at the border).
        assert!((0.7..3.0).contains(&rms), "rms displacement {rms}");
        let step = field
            .windows(2)
            .enumerate()
            .filter(|(i, _)| (i + 1) % IMAGE_SIZE != 0)
            .map(|(_, pair)| (pair[1][0] - pair[0][0]).abs())
            .fold(0.0f32, f32::max);
        assert!(step < 0.5 * rms, "neighbours differ by up to {step}: not smooth");
    }
}
