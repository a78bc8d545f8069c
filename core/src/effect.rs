//! Ordered effects: filters that run on the image as the filter before left it, in the order a
//! URL gives them (thumbor's rule), where the fixed fields of [`crate::transform::Transform`]
//! cannot say the order.
//!
//! A transform carries two lists of them ([`Transform::effects`], applied after its own
//! grayscale, blur and sharpen and before the padding, and [`Transform::final_effects`], after
//! the rotation), so `brightness(10):fill(red)` brightens the image but not the padding, and
//! `fill(red):brightness(10)` both. The colour arithmetic is thumbor's own (its C extensions
//! under `thumbor/ext/filters/`), on 8-bit sRGB channels; alpha is never changed except by
//! [`RoundCorner::transparent`].
//!
//! The text form (the wire's and the canonical form's) is thumbor's filter syntax, filters
//! joined by `:`: `brightness(10):rgb(10,-5,0):round_corner(20|10,255,255,255):blur(3)`.
//!
//! [`Transform::effects`]: crate::transform::Transform::effects
//! [`Transform::final_effects`]: crate::transform::Transform::final_effects

use std::fmt;

use crate::color::Color;
use crate::grammar::{GrammarError, invalid, parse_amount, parse_blur_radius, parse_sigma};
use crate::transform::{Hundredths, MAX_DIMENSION, Sharpen};

/// Most effects one list holds (a URL has at most as many filters:
/// [`crate::thumbor::MAX_FILTERS`]).
pub const MAX_EFFECTS: usize = 32;

/// Largest round-corner radius (each of the two); the pipeline also clamps it to half the
/// image's side, as thumbor does.
pub const MAX_CORNER_RADIUS: u16 = MAX_DIMENSION as u16;

/// Rounded corners: the parts of the image outside an ellipse of radii `a` (horizontal) and
/// `b` (vertical) in each corner are painted `color`, or made transparent (thumbor's
/// `round_corner(a|b,r,g,b[,transparent])`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundCorner {
    /// Horizontal radius, 1–[`MAX_CORNER_RADIUS`].
    pub a: u16,
    /// Vertical radius, 1–[`MAX_CORNER_RADIUS`].
    pub b: u16,
    /// The opaque colour painted outside the corners.
    pub color: Color,
    /// Make the corners transparent instead (an alpha channel is added where the image has
    /// none).
    pub transparent: bool,
}

/// One effect. Arguments are in thumbor's units; each is bounded when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Effect {
    /// Rec. 709 luma (see [`crate::transform::Transform::grayscale`]).
    #[default]
    Grayscale,
    /// Gaussian blur of this sigma (see [`crate::transform::Transform::blur`]).
    Blur(Hundredths),
    /// Unsharp mask (see [`crate::transform::Transform::sharpen`]).
    Sharpen(Sharpen),
    /// Adds N % of 255 to each channel, −100 to 100 (`(255·N)/100`, truncated, clamped).
    Brightness(i8),
    /// Scales each channel around 128 by `(N+100)²/100` %, −100 to 100 (thumbor's integer
    /// arithmetic, clamped).
    Contrast(i8),
    /// Moves each channel away from (or towards) the pixel's weighted RMS brightness by
    /// `1 + N/100`, −100 (grey) to 100 (thumbor's formula, see the thumbor module for the
    /// factor).
    Saturation(i8),
    /// Adds R, G and B % of 255 to the red, green and blue channels, each −100 to 100.
    Rgb(i8, i8, i8),
    /// Adds the same pseudo-random value in `[-N/2, N/2)` to a pixel's three channels, N 0
    /// to 100; the sequence is fixed, so a render is reproducible.
    Noise(u8),
    /// Rounded corners.
    RoundCorner(RoundCorner),
}

impl Effect {
    /// The effect a quarter turn later: the corners' radii swap (colour effects are the same
    /// either side of a rotation).
    pub fn turned(self) -> Effect {
        match self {
            Effect::RoundCorner(c) => Effect::RoundCorner(RoundCorner {
                a: c.b,
                b: c.a,
                ..c
            }),
            other => other,
        }
    }

    /// The colour filters thumbor names (`brightness`, `contrast`, `saturation`, `rgb`,
    /// `noise`, `round_corner`), from the filter's name and its arguments split at commas;
    /// `None` when `name` is none of them. Arguments out of range are 400.
    pub fn parse_filter(name: &str, args: &[&str]) -> Option<Result<Effect, GrammarError>> {
        let percent = |value: &str| -> Result<i8, GrammarError> {
            value
                .trim()
                .parse::<i8>()
                .ok()
                .filter(|v| (-100..=100).contains(v))
                .ok_or_else(|| {
                    invalid(format!(
                        "{name}: {value:?} is not a whole number from -100 to 100"
                    ))
                })
        };
        let arity = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(invalid(format!("{name}() takes {n} arguments")))
            }
        };
        Some(match name {
            "brightness" => arity(1).and_then(|()| percent(args[0]).map(Effect::Brightness)),
            "contrast" => arity(1).and_then(|()| percent(args[0]).map(Effect::Contrast)),
            "saturation" => arity(1).and_then(|()| percent(args[0]).map(Effect::Saturation)),
            "rgb" => arity(3).and_then(|()| {
                Ok(Effect::Rgb(
                    percent(args[0])?,
                    percent(args[1])?,
                    percent(args[2])?,
                ))
            }),
            // thumbor's optional seed: pixmesh's sequence is fixed, so it is checked and
            // ignored.
            "noise" if args.len() == 2 => match args[1].trim().parse::<u32>() {
                Ok(_) => Effect::parse_filter(name, &args[..1])?,
                Err(_) => Err(invalid(format!(
                    "noise: seed {:?} is not a whole number",
                    args[1]
                ))),
            },
            "noise" => arity(1).and_then(|()| {
                args[0]
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|v| *v <= 100)
                    .map(Effect::Noise)
                    .ok_or_else(|| {
                        invalid(format!(
                            "noise: {:?} is not a whole number from 0 to 100",
                            args[0]
                        ))
                    })
            }),
            "round_corner" => parse_round_corner(args).map(Effect::RoundCorner),
            _ => return None,
        })
    }
}

/// `round_corner(A[|B],R,G,B[,TRANSPARENT])`.
fn parse_round_corner(args: &[&str]) -> Result<RoundCorner, GrammarError> {
    if !(4..=5).contains(&args.len()) {
        return Err(invalid("round_corner() takes 4 or 5 arguments"));
    }
    let radius = |v: &str| {
        v.trim()
            .parse::<u16>()
            .ok()
            .filter(|r| (1..=MAX_CORNER_RADIUS).contains(r))
            .ok_or_else(|| {
                invalid(format!(
                    "round_corner: radius {v:?} is not a whole number from 1 to {MAX_CORNER_RADIUS}"
                ))
            })
    };
    let (a, b) = match args[0].split_once('|') {
        Some((a, b)) => (radius(a)?, radius(b)?),
        None => (radius(args[0])?, radius(args[0])?),
    };
    let channel = |v: &str| {
        v.trim().parse::<u8>().map_err(|_| {
            invalid(format!(
                "round_corner: colour channel {v:?} is not a whole number from 0 to 255"
            ))
        })
    };
    let color = Color::rgb(channel(args[1])?, channel(args[2])?, channel(args[3])?);
    let transparent = match args.get(4).map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(v) if v == "true" || v == "1" || v == "transparent" => true,
        Some(v) if v == "false" || v == "0" => false,
        Some(v) => {
            return Err(invalid(format!(
                "round_corner: transparent {v:?} is not true or false"
            )));
        }
    };
    Ok(RoundCorner {
        a,
        b,
        color,
        transparent,
    })
}

impl fmt::Display for Effect {
    /// thumbor's filter syntax (a blur by its radius, twice the sigma, as thumbor's URLs say).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Effect::Grayscale => f.write_str("grayscale()"),
            Effect::Blur(sigma) => write!(f, "blur({})", sigma.doubled()),
            Effect::Sharpen(s) => write!(f, "sharpen({},{},true)", s.amount, s.sigma),
            Effect::Brightness(n) => write!(f, "brightness({n})"),
            Effect::Contrast(n) => write!(f, "contrast({n})"),
            Effect::Saturation(n) => write!(f, "saturation({n})"),
            Effect::Rgb(r, g, b) => write!(f, "rgb({r},{g},{b})"),
            Effect::Noise(n) => write!(f, "noise({n})"),
            Effect::RoundCorner(c) => {
                write!(f, "round_corner({}", c.a)?;
                if c.b != c.a {
                    write!(f, "|{}", c.b)?;
                }
                write!(f, ",{},{},{}", c.color.r, c.color.g, c.color.b)?;
                if c.transparent {
                    f.write_str(",true")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// An ordered list of at most [`MAX_EFFECTS`] effects, kept inline so transforms stay `Copy`.
#[derive(Clone, Copy, Default)]
pub struct Effects {
    len: u8,
    items: [Effect; MAX_EFFECTS],
}

/// More than [`MAX_EFFECTS`] effects in one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("more than {MAX_EFFECTS} effects")]
pub struct TooManyEffects;

impl Effects {
    /// The list of `effects`; more than [`MAX_EFFECTS`] is an error.
    pub fn from_slice(effects: &[Effect]) -> Result<Effects, TooManyEffects> {
        let mut list = Effects::default();
        for &e in effects {
            list.push(e)?;
        }
        Ok(list)
    }

    /// Appends `effect`.
    pub fn push(&mut self, effect: Effect) -> Result<(), TooManyEffects> {
        let slot = self
            .items
            .get_mut(usize::from(self.len))
            .ok_or(TooManyEffects)?;
        *slot = effect;
        self.len += 1;
        Ok(())
    }

    /// The effects, in order.
    pub fn as_slice(&self) -> &[Effect] {
        &self.items[..usize::from(self.len)]
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Each effect as [`Effect::turned`].
    pub fn turned(mut self) -> Effects {
        for e in &mut self.items[..usize::from(self.len)] {
            *e = e.turned();
        }
        self
    }
}

impl PartialEq for Effects {
    fn eq(&self, other: &Effects) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Effects {}

impl fmt::Debug for Effects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl fmt::Display for Effects {
    /// The effects joined by `:`; empty for none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.as_slice().iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Effects {
    type Err = GrammarError;

    /// The inverse of `Display` (empty: none). `blur(RADIUS)` is a sigma of half the radius;
    /// `sharpen(AMOUNT,SIGMA,true)`.
    fn from_str(s: &str) -> Result<Effects, GrammarError> {
        let mut list = Effects::default();
        if s.is_empty() {
            return Ok(list);
        }
        for part in s.split(':') {
            let bad = || invalid(format!("effect {:?} is malformed", clip(part)));
            let (name, rest) = part.split_once('(').ok_or_else(bad)?;
            let args = rest.strip_suffix(')').ok_or_else(bad)?;
            let args: Vec<&str> = match args {
                "" => Vec::new(),
                a => a.split(',').collect(),
            };
            let effect = match (name, args.as_slice()) {
                ("grayscale", []) => Effect::Grayscale,
                ("blur", [radius]) => {
                    Effect::Blur(parse_blur_radius("blur", radius)?.ok_or_else(bad)?)
                }
                ("sharpen", [amount, sigma, "true"]) => Effect::Sharpen(Sharpen {
                    amount: parse_amount("sharpen", amount)?.ok_or_else(bad)?,
                    sigma: parse_sigma("sharpen", sigma)?.ok_or_else(bad)?,
                }),
                _ => Effect::parse_filter(name, &args).ok_or_else(bad)??,
            };
            list.push(effect).map_err(|e| invalid(e.to_string()))?;
        }
        Ok(list)
    }
}

/// At most 64 characters of `s`, for messages.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effects_have_a_text_form() {
        for (text, ok) in [
            ("", true),
            ("brightness(10)", true),
            ("brightness(-100):contrast(100):saturation(-40)", true),
            ("rgb(10,-5,0):noise(30)", true),
            ("round_corner(20|10,255,0,0,true):grayscale():blur(3)", true),
            ("round_corner(20,1,2,3)", true),
            ("sharpen(1.5,2,true)", true),
            ("brightness(101)", false),
            ("brightness(1.5)", false),
            ("noise(-1)", false),
            ("noise(101)", false),
            ("rgb(1,2)", false),
            ("round_corner(0,1,2,3)", false),
            ("round_corner(20,256,2,3)", false),
            ("round_corner(20,1,2,3,maybe)", false),
            ("blur(0)", false),
            ("grayscale", false),
            ("grayscale():", false),
            ("label(hi)", false),
            ("sharpen(1,2)", false),
        ] {
            let parsed = text.parse::<Effects>();
            assert_eq!(parsed.is_ok(), ok, "{text}: {parsed:?}");
            if let Ok(e) = parsed {
                assert_eq!(e.to_string(), text);
            }
        }
        let many = vec!["noise(1)"; MAX_EFFECTS + 1].join(":");
        assert!(many.parse::<Effects>().is_err());
        let most = vec!["noise(1)"; MAX_EFFECTS].join(":");
        assert_eq!(
            most.parse::<Effects>().unwrap().as_slice().len(),
            MAX_EFFECTS
        );
    }

    #[test]
    fn lists_compare_by_their_effects_and_turn() {
        let mut a = Effects::default();
        a.push(Effect::Noise(3)).unwrap();
        let b = Effects::from_slice(&[Effect::Noise(3)]).unwrap();
        assert_eq!(a, b);
        assert_eq!(format!("{a:?}"), "[Noise(3)]");
        let corner = Effect::RoundCorner(RoundCorner {
            a: 5,
            b: 9,
            color: Color::WHITE,
            transparent: false,
        });
        let turned = Effects::from_slice(&[corner, Effect::Brightness(5)])
            .unwrap()
            .turned();
        assert_eq!(
            turned.to_string(),
            "round_corner(9|5,255,255,255):brightness(5)"
        );
    }
}
