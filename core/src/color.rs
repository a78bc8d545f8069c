//! Colours as URLs write them: hexadecimal (`f00`, `ff0000`, `ff000080`) and the CSS colour
//! names thumbor and imagor accept (`white`, `rebeccapurple`).

use std::fmt;

/// An 8-bit sRGB colour with straight (not premultiplied) alpha; `a` 255 is opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Color {
    /// Red.
    pub r: u8,
    /// Green.
    pub g: u8,
    /// Blue.
    pub b: u8,
    /// Alpha: 0 transparent, 255 opaque.
    pub a: u8,
}

impl Color {
    /// Opaque white.
    pub const WHITE: Color = Color::rgb(255, 255, 255);
    /// Opaque black.
    pub const BLACK: Color = Color::rgb(0, 0, 0);

    /// An opaque colour.
    pub const fn rgb(r: u8, g: u8, b: u8) -> Color {
        Color { r, g, b, a: 255 }
    }

    /// Whether the colour is fully opaque.
    pub fn is_opaque(self) -> bool {
        self.a == 255
    }

    /// `Some(self)` unless the colour is fully transparent, which paints nothing: the transform
    /// model keeps "no background" as `None` only, so equal requests have equal canonical forms.
    pub fn visible(self) -> Option<Color> {
        (self.a != 0).then_some(self)
    }

    /// Parses 3 (`rgb`), 4 (`rgba`), 6 (`rrggbb`) or 8 (`rrggbbaa`) hexadecimal digits, in
    /// either case, without `#`.
    pub fn from_hex(s: &str) -> Option<Color> {
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let digit = |i: usize| u8::from_str_radix(&s[i..=i], 16).ok();
        let pair = |i: usize| u8::from_str_radix(&s[i..i + 2], 16).ok();
        match s.len() {
            3 | 4 => {
                let short = |i| digit(i).map(|d| d * 17);
                let a = if s.len() == 4 { short(3)? } else { 255 };
                Some(Color {
                    r: short(0)?,
                    g: short(1)?,
                    b: short(2)?,
                    a,
                })
            }
            6 | 8 => {
                let a = if s.len() == 8 { pair(6)? } else { 255 };
                Some(Color {
                    r: pair(0)?,
                    g: pair(2)?,
                    b: pair(4)?,
                    a,
                })
            }
            _ => None,
        }
    }

    /// A CSS colour name (case-insensitive), opaque; `None` when unknown. `transparent` is not
    /// a name here: callers decide what it means.
    pub fn from_name(name: &str) -> Option<Color> {
        let lower = name.to_ascii_lowercase();
        CSS_NAMES
            .binary_search_by(|(n, _)| n.cmp(&lower.as_str()))
            .ok()
            .map(|i| {
                let [_, r, g, b] = CSS_NAMES[i].1.to_be_bytes();
                Color::rgb(r, g, b)
            })
    }

    /// Lowercase hexadecimal: `rrggbb` when opaque, `rrggbbaa` otherwise.
    pub fn hex(self) -> String {
        let mut s = format!("{:02x}{:02x}{:02x}", self.r, self.g, self.b);
        if !self.is_opaque() {
            s.push_str(&format!("{:02x}", self.a));
        }
        s
    }

    /// The colour packed as `0xRRGGBBAA` (the wire form).
    pub fn to_rgba_u32(self) -> u32 {
        u32::from_be_bytes([self.r, self.g, self.b, self.a])
    }

    /// The colour of a packed `0xRRGGBBAA`.
    pub fn from_rgba_u32(v: u32) -> Color {
        let [r, g, b, a] = v.to_be_bytes();
        Color { r, g, b, a }
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// The CSS Color Module Level 4 named colours (SVG 1.1's set plus `rebeccapurple`), sorted by
/// name for binary search, as `0x00RRGGBB`.
const CSS_NAMES: [(&str, u32); 148] = [
    ("aliceblue", 0xf0f8ff),
    ("antiquewhite", 0xfaebd7),
    ("aqua", 0x00ffff),
    ("aquamarine", 0x7fffd4),
    ("azure", 0xf0ffff),
    ("beige", 0xf5f5dc),
    ("bisque", 0xffe4c4),
    ("black", 0x000000),
    ("blanchedalmond", 0xffebcd),
    ("blue", 0x0000ff),
    ("blueviolet", 0x8a2be2),
    ("brown", 0xa52a2a),
    ("burlywood", 0xdeb887),
    ("cadetblue", 0x5f9ea0),
    ("chartreuse", 0x7fff00),
    ("chocolate", 0xd2691e),
    ("coral", 0xff7f50),
    ("cornflowerblue", 0x6495ed),
    ("cornsilk", 0xfff8dc),
    ("crimson", 0xdc143c),
    ("cyan", 0x00ffff),
    ("darkblue", 0x00008b),
    ("darkcyan", 0x008b8b),
    ("darkgoldenrod", 0xb8860b),
    ("darkgray", 0xa9a9a9),
    ("darkgreen", 0x006400),
    ("darkgrey", 0xa9a9a9),
    ("darkkhaki", 0xbdb76b),
    ("darkmagenta", 0x8b008b),
    ("darkolivegreen", 0x556b2f),
    ("darkorange", 0xff8c00),
    ("darkorchid", 0x9932cc),
    ("darkred", 0x8b0000),
    ("darksalmon", 0xe9967a),
    ("darkseagreen", 0x8fbc8f),
    ("darkslateblue", 0x483d8b),
    ("darkslategray", 0x2f4f4f),
    ("darkslategrey", 0x2f4f4f),
    ("darkturquoise", 0x00ced1),
    ("darkviolet", 0x9400d3),
    ("deeppink", 0xff1493),
    ("deepskyblue", 0x00bfff),
    ("dimgray", 0x696969),
    ("dimgrey", 0x696969),
    ("dodgerblue", 0x1e90ff),
    ("firebrick", 0xb22222),
    ("floralwhite", 0xfffaf0),
    ("forestgreen", 0x228b22),
    ("fuchsia", 0xff00ff),
    ("gainsboro", 0xdcdcdc),
    ("ghostwhite", 0xf8f8ff),
    ("gold", 0xffd700),
    ("goldenrod", 0xdaa520),
    ("gray", 0x808080),
    ("green", 0x008000),
    ("greenyellow", 0xadff2f),
    ("grey", 0x808080),
    ("honeydew", 0xf0fff0),
    ("hotpink", 0xff69b4),
    ("indianred", 0xcd5c5c),
    ("indigo", 0x4b0082),
    ("ivory", 0xfffff0),
    ("khaki", 0xf0e68c),
    ("lavender", 0xe6e6fa),
    ("lavenderblush", 0xfff0f5),
    ("lawngreen", 0x7cfc00),
    ("lemonchiffon", 0xfffacd),
    ("lightblue", 0xadd8e6),
    ("lightcoral", 0xf08080),
    ("lightcyan", 0xe0ffff),
    ("lightgoldenrodyellow", 0xfafad2),
    ("lightgray", 0xd3d3d3),
    ("lightgreen", 0x90ee90),
    ("lightgrey", 0xd3d3d3),
    ("lightpink", 0xffb6c1),
    ("lightsalmon", 0xffa07a),
    ("lightseagreen", 0x20b2aa),
    ("lightskyblue", 0x87cefa),
    ("lightslategray", 0x778899),
    ("lightslategrey", 0x778899),
    ("lightsteelblue", 0xb0c4de),
    ("lightyellow", 0xffffe0),
    ("lime", 0x00ff00),
    ("limegreen", 0x32cd32),
    ("linen", 0xfaf0e6),
    ("magenta", 0xff00ff),
    ("maroon", 0x800000),
    ("mediumaquamarine", 0x66cdaa),
    ("mediumblue", 0x0000cd),
    ("mediumorchid", 0xba55d3),
    ("mediumpurple", 0x9370db),
    ("mediumseagreen", 0x3cb371),
    ("mediumslateblue", 0x7b68ee),
    ("mediumspringgreen", 0x00fa9a),
    ("mediumturquoise", 0x48d1cc),
    ("mediumvioletred", 0xc71585),
    ("midnightblue", 0x191970),
    ("mintcream", 0xf5fffa),
    ("mistyrose", 0xffe4e1),
    ("moccasin", 0xffe4b5),
    ("navajowhite", 0xffdead),
    ("navy", 0x000080),
    ("oldlace", 0xfdf5e6),
    ("olive", 0x808000),
    ("olivedrab", 0x6b8e23),
    ("orange", 0xffa500),
    ("orangered", 0xff4500),
    ("orchid", 0xda70d6),
    ("palegoldenrod", 0xeee8aa),
    ("palegreen", 0x98fb98),
    ("paleturquoise", 0xafeeee),
    ("palevioletred", 0xdb7093),
    ("papayawhip", 0xffefd5),
    ("peachpuff", 0xffdab9),
    ("peru", 0xcd853f),
    ("pink", 0xffc0cb),
    ("plum", 0xdda0dd),
    ("powderblue", 0xb0e0e6),
    ("purple", 0x800080),
    ("rebeccapurple", 0x663399),
    ("red", 0xff0000),
    ("rosybrown", 0xbc8f8f),
    ("royalblue", 0x4169e1),
    ("saddlebrown", 0x8b4513),
    ("salmon", 0xfa8072),
    ("sandybrown", 0xf4a460),
    ("seagreen", 0x2e8b57),
    ("seashell", 0xfff5ee),
    ("sienna", 0xa0522d),
    ("silver", 0xc0c0c0),
    ("skyblue", 0x87ceeb),
    ("slateblue", 0x6a5acd),
    ("slategray", 0x708090),
    ("slategrey", 0x708090),
    ("snow", 0xfffafa),
    ("springgreen", 0x00ff7f),
    ("steelblue", 0x4682b4),
    ("tan", 0xd2b48c),
    ("teal", 0x008080),
    ("thistle", 0xd8bfd8),
    ("tomato", 0xff6347),
    ("turquoise", 0x40e0d0),
    ("violet", 0xee82ee),
    ("wheat", 0xf5deb3),
    ("white", 0xffffff),
    ("whitesmoke", 0xf5f5f5),
    ("yellow", 0xffff00),
    ("yellowgreen", 0x9acd32),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_forms() {
        assert_eq!(Color::from_hex("f00"), Some(Color::rgb(255, 0, 0)));
        assert_eq!(
            Color::from_hex("F008"),
            Some(Color {
                r: 255,
                g: 0,
                b: 0,
                a: 0x88
            })
        );
        assert_eq!(Color::from_hex("102030"), Some(Color::rgb(16, 32, 48)));
        assert_eq!(
            Color::from_hex("10203040"),
            Some(Color {
                r: 16,
                g: 32,
                b: 48,
                a: 64
            })
        );
        for bad in [
            "",
            "ff",
            "fffff",
            "ggg",
            "+ff",
            "1020304",
            "102030405",
            "éé",
        ] {
            assert_eq!(Color::from_hex(bad), None, "{bad}");
        }
        assert_eq!(Color::rgb(16, 32, 48).hex(), "102030");
        let c = Color::from_hex("10203040").unwrap();
        assert_eq!(c.hex(), "10203040");
        assert_eq!(Color::from_rgba_u32(c.to_rgba_u32()), c);
        assert_eq!(Color::WHITE.to_rgba_u32(), 0xffff_ffff);
    }

    #[test]
    fn css_names() {
        assert!(CSS_NAMES.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        assert_eq!(Color::from_name("White"), Some(Color::WHITE));
        assert_eq!(
            Color::from_name("rebeccapurple"),
            Some(Color::rgb(0x66, 0x33, 0x99))
        );
        assert_eq!(
            Color::from_name("yellowgreen"),
            Some(Color::rgb(0x9a, 0xcd, 0x32))
        );
        assert_eq!(
            Color::from_name("aliceblue"),
            Some(Color::rgb(0xf0, 0xf8, 0xff))
        );
        assert_eq!(Color::from_name("transparent"), None);
        assert_eq!(Color::from_name("blurple"), None);
        assert_eq!(Color::BLACK.visible(), Some(Color::BLACK));
        assert_eq!(
            Color {
                a: 0,
                ..Color::WHITE
            }
            .visible(),
            None
        );
    }
}
