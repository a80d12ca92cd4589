//! `bench-photos`: MNIST test digits rendered as photos and scans (grey and tinted paper,
//! uneven light, blur, sensor noise, JPEG, both polarities, a small digit in a large frame),
//! written as PNG and JPEG files and read back through `predict`'s own path, with accuracy
//! per kind of degradation against the same digits rendered clean.
//!
//! Also blank photos and photos whose ink barely differs from the paper, each of which must
//! be refused rather than answered.

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::{self, FilterType};
use image::{GrayImage, Rgb, RgbImage};
use rand::{RngExt, SeedableRng, rngs::StdRng};

use crate::args::{DataArgs, at_least_one, committed_model, non_negative};
use crate::predict::{load_model, seen_by_model};

#[derive(Args, Debug)]
pub struct BenchPhotosArgs {
    /// Test digits rendered for each kind (the first N of MNIST's test set).
    #[arg(long, default_value_t = 1000, value_parser = at_least_one)]
    digits: usize,
    /// Fail when a kind's accuracy falls more than this many points below the clean digits',
    /// or a blank or faint photo is answered.
    #[arg(long, value_name = "POINTS", value_parser = non_negative)]
    max_drop: Option<f32>,
    /// Where the images are written [default: target/photos].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
}

/// How a digit is put on paper and photographed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Clean,
    GreyPaper,
    TintedPaper,
    UnevenLight,
    Blur,
    Noise,
    Jpeg(u8),
    LightOnDark,
    SmallInFrame,
    /// Grey or tinted paper with milder uneven light, blur, noise and JPEG all together.
    Photo,
}

const KINDS: [Kind; 12] = [
    Kind::Clean,
    Kind::GreyPaper,
    Kind::TintedPaper,
    Kind::UnevenLight,
    Kind::Blur,
    Kind::Noise,
    Kind::Jpeg(25),
    Kind::Jpeg(50),
    Kind::Jpeg(85),
    Kind::LightOnDark,
    Kind::SmallInFrame,
    Kind::Photo,
];

impl Kind {
    fn name(self) -> String {
        match self {
            Kind::Clean => "clean (white paper, black ink, PNG)".into(),
            Kind::GreyPaper => "grey paper, dark grey ink".into(),
            Kind::TintedPaper => "tinted paper, coloured ink".into(),
            Kind::UnevenLight => "uneven light (gradient and vignette)".into(),
            Kind::Blur => "blur (Gaussian, 1-3% of the frame)".into(),
            Kind::Noise => "sensor noise (sd 10-20 levels)".into(),
            Kind::Jpeg(quality) => format!("JPEG quality {quality}"),
            Kind::LightOnDark => "light ink on dark paper".into(),
            Kind::SmallInFrame => "small digit (15-25% of the frame)".into(),
            Kind::Photo => "phone photo: grey/tinted paper, light, blur, noise, JPEG".into(),
        }
    }

    fn folder(self) -> String {
        match self {
            Kind::Jpeg(quality) => format!("jpeg-{quality}"),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

/// One rendering's choices, drawn per image.
struct Scene {
    frame: (u32, u32),
    /// Side of the 28x28 digit as drawn, and its top-left corner.
    digit_side: u32,
    at: (u32, u32),
    paper: [f32; 3],
    ink: [f32; 3],
    /// Darkest share of light at the frame's far side (1: even light).
    shadow: f32,
    blur: f32,
    noise: f32,
    jpeg: Option<u8>,
}

impl Scene {
    fn draw(kind: Kind, rng: &mut StdRng) -> Self {
        let side = rng.random_range(48..=480u32);
        let frame = (side, (side as f32 * rng.random_range(0.8..=1.25)) as u32);
        // The digit's 28 pixels span 0.8-1.1x the frame's shorter side (MNIST's digits fill
        // 20 of their 28, so the digit itself fills 57-79% of it), placed with some slack.
        let small = kind == Kind::SmallInFrame;
        let fill = if small { rng.random_range(0.15..=0.25) } else { rng.random_range(0.8..=1.1) };
        let digit_side = ((frame.0.min(frame.1) as f32 * fill) as u32).max(28);
        let slack = |extent: u32| extent.saturating_sub(digit_side);
        let at = (rng.random_range(0..=slack(frame.0)), rng.random_range(0..=slack(frame.1)));
        let grey = |level: f32| [level; 3];
        let mut scene = Scene {
            frame,
            digit_side,
            at,
            paper: grey(255.0),
            ink: grey(0.0),
            shadow: 1.0,
            blur: 0.0,
            noise: 0.0,
            jpeg: None,
        };
        let scale = frame.0.min(frame.1) as f32;
        match kind {
            Kind::GreyPaper => scene.grey_paper(rng),
            Kind::TintedPaper => scene.tinted_paper(rng),
            Kind::Photo if rng.random_bool(0.5) => scene.grey_paper(rng),
            Kind::Photo => scene.tinted_paper(rng),
            Kind::LightOnDark => {
                scene.paper = grey(rng.random_range(15.0..=70.0));
                scene.ink = grey(rng.random_range(190.0..=250.0));
            }
            Kind::Jpeg(quality) => scene.jpeg = Some(quality),
            _ => {}
        }
        // Each degradation alone at its strongest; a phone photo has all of them, milder.
        match kind {
            Kind::UnevenLight => scene.shadow = rng.random_range(0.35..=0.7),
            Kind::Blur => scene.blur = scale * rng.random_range(0.01..=0.03),
            Kind::Noise => scene.noise = rng.random_range(10.0..=20.0),
            Kind::Photo => {
                scene.shadow = rng.random_range(0.5..=0.8);
                scene.blur = scale * rng.random_range(0.005..=0.015);
                scene.noise = rng.random_range(4.0..=10.0);
                scene.jpeg = Some(rng.random_range(60..=90));
            }
            _ => {}
        }
        scene
    }

    fn grey_paper(&mut self, rng: &mut StdRng) {
        self.paper = [rng.random_range(140.0..=200.0); 3];
        self.ink = [rng.random_range(20.0..=70.0); 3];
    }

    fn tinted_paper(&mut self, rng: &mut StdRng) {
        const PAPERS: [[f32; 3]; 3] = [[240.0, 228.0, 170.0], [190.0, 212.0, 238.0], [236.0, 200.0, 205.0]];
        const INKS: [[f32; 3]; 3] = [[25.0, 40.0, 150.0], [140.0, 20.0, 30.0], [40.0, 40.0, 45.0]];
        self.paper = PAPERS[rng.random_range(0..PAPERS.len())];
        self.ink = INKS[rng.random_range(0..INKS.len())];
    }

    /// The digit (`grey`: MNIST's 0 = paper, 255 = ink) photographed as this scene says.
    fn render(&self, grey: &[u8], rng: &mut StdRng) -> RgbImage {
        let digit = GrayImage::from_raw(28, 28, grey.to_vec()).expect("28x28 bytes");
        let digit = imageops::resize(&digit, self.digit_side, self.digit_side, FilterType::Triangle);
        let (width, height) = self.frame;
        // Light falls off along a random direction, and a little towards the corners.
        let angle = rng.random_range(0.0..std::f32::consts::TAU);
        let (dx, dy) = (angle.cos(), angle.sin());
        let mut image = RgbImage::from_fn(width, height, |x, y| {
            let inside = x.checked_sub(self.at.0).zip(y.checked_sub(self.at.1));
            let ink = inside
                .and_then(|(u, v)| (u < self.digit_side && v < self.digit_side).then(|| digit.get_pixel(u, v)[0]))
                .map_or(0.0, |v| f32::from(v) / 255.0);
            let (u, v) = (x as f32 / width as f32 - 0.5, y as f32 / height as f32 - 0.5);
            let along = (u * dx + v * dy + 0.71) / 1.42;
            let light = 1.0 - (1.0 - self.shadow) * (0.8 * along + 0.2 * (u * u + v * v) * 2.0);
            Rgb(std::array::from_fn(|c| {
                (light * (self.paper[c] * (1.0 - ink) + self.ink[c] * ink)).clamp(0.0, 255.0) as u8
            }))
        });
        if self.blur > 0.0 {
            image = imageops::blur(&image, self.blur);
        }
        if self.noise > 0.0 {
            for channel in image.iter_mut() {
                *channel = (f32::from(*channel) + self.noise * gaussian(rng)).round().clamp(0.0, 255.0) as u8;
            }
        }
        image
    }

    /// Writes `image` as PNG, or as JPEG where the scene says, returning the file's path.
    fn save(&self, image: &RgbImage, stem: &Path) -> anyhow::Result<PathBuf> {
        let path = stem.with_extension(if self.jpeg.is_some() { "jpg" } else { "png" });
        match self.jpeg {
            Some(quality) => {
                let file = BufWriter::new(fs::File::create(&path)?);
                image.write_with_encoder(JpegEncoder::new_with_quality(file, quality))?;
            }
            None => image.save(&path)?,
        }
        Ok(path)
    }
}

/// A standard normal draw (Box-Muller).
fn gaussian(rng: &mut StdRng) -> f32 {
    let (u, v): (f32, f32) = (rng.random_range(f32::EPSILON..1.0), rng.random_range(0.0..1.0));
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

pub fn bench_photos(args: BenchPhotosArgs) -> anyhow::Result<()> {
    let test = args.data.load_test()?;
    let digits = args.digits.min(test.len());
    let (model, device) = load_model(&committed_model())?;
    let out = args.out.unwrap_or_else(|| crate::target_dir().join("photos"));
    println!(
        "{digits} MNIST test digits per kind, rendered into {} and read back as `predict` reads files",
        out.display()
    );

    let mut rows = Vec::new();
    for (k, kind) in KINDS.into_iter().enumerate() {
        let folder = out.join(kind.folder());
        fs::create_dir_all(&folder).with_context(|| format!("cannot create {}", folder.display()))?;
        let mut rng = StdRng::seed_from_u64(k as u64);
        let mut correct = 0;
        for i in 0..digits {
            let scene = Scene::draw(kind, &mut rng);
            let label = test.labels[i];
            let file = scene.save(&scene.render(test.image(i), &mut rng), &folder.join(format!("{i:05}-{label}")))?;
            // A refusal counts as a wrong answer.
            if seen_by_model(&file).is_ok_and(|seen| model.classify(&seen, &device).digit == label as usize) {
                correct += 1;
            }
        }
        let accuracy = 100.0 * correct as f64 / digits as f64;
        println!("{:<62} {correct:>5} / {digits}  {accuracy:6.2}%", kind.name());
        rows.push((kind, accuracy));
    }

    let answered = refusals(&out)?;
    let clean = rows[0].1;
    let worst = rows.iter().map(|&(_, accuracy)| accuracy).fold(f64::INFINITY, f64::min);
    println!("largest drop below the clean digits: {:.2} points", clean - worst);
    if let Some(max_drop) = args.max_drop {
        if clean - worst > f64::from(max_drop) {
            bail!(
                "a kind of photo scores {:.2} points below the clean digits (at most {max_drop} allowed)",
                clean - worst
            );
        }
        if answered > 0 {
            bail!("{answered} blank or faint photos were answered instead of refused");
        }
    }
    Ok(())
}

/// Blank photos and digits a few grey levels from their paper, on grey or tinted paper in
/// uneven light with noise, as JPEG: each must be refused. Returns how many were answered instead.
fn refusals(out: &Path) -> anyhow::Result<usize> {
    let folder = out.join("refused");
    fs::create_dir_all(&folder)?;
    let mut rng = StdRng::seed_from_u64(99);
    let mut answered = Vec::new();
    const EACH: usize = 50;
    for i in 0..2 * EACH {
        let mut scene = Scene::draw(Kind::Photo, &mut rng);
        scene.blur = 0.0;
        let blank = i < EACH;
        let paper = scene.paper;
        // Blank: ink the colour of the paper; faint: 4-6 grey levels darker.
        let darker = if blank { 0.0 } else { rng.random_range(4.0..=6.0) };
        scene.ink = paper.map(|p| p - darker);
        scene.noise = rng.random_range(2.0..=4.0);
        let digit = [255u8; 28 * 28];
        let file = scene.save(&scene.render(&digit, &mut rng), &folder.join(format!("{i:05}")))?;
        if seen_by_model(&file).is_ok() {
            answered.push(file.display().to_string());
        }
    }
    let examples = answered.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    println!(
        "blank photos and digits 4-6 grey levels from their paper: {} of {} refused{}",
        2 * EACH - answered.len(),
        2 * EACH,
        if answered.is_empty() { String::new() } else { format!(" (answered, for example: {examples})") }
    );
    Ok(answered.len())
}
