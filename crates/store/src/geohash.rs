//! The geohash arithmetic behind the GEO commands, bit for bit as Redis computes
//! it (`geohash.c`, `geohash_helper.c`): a position is a 52-bit interleaving of
//! 26 latitude and 26 longitude bits (latitude limited to the Web Mercator range
//! ±85.05112878), stored as a sorted-set score; a search scans the score ranges
//! of the cell holding the centre and its eight neighbours, at a cell size picked
//! from the search radius, and filters by haversine distance. Results must match
//! Redis's exactly, including its rounding at the edges, so the floating-point
//! operations are done in the same order.

use std::f64::consts::PI;

/// Bits per coordinate at full precision (26 × 2 = 52, exact in a double).
pub const STEP_MAX: u8 = 26;
pub const LAT_MIN: f64 = -85.05112878;
pub const LAT_MAX: f64 = 85.05112878;
pub const LON_MIN: f64 = -180.0;
pub const LON_MAX: f64 = 180.0;

/// Earth's quadratic mean radius (WGS-84), the one Redis uses.
pub const EARTH_RADIUS_M: f64 = 6372797.560856;
const MERCATOR_MAX: f64 = 20037726.37;
const DEG_TO_RAD: f64 = PI / 180.0;

/// A cell: `step` bits per coordinate, interleaved (latitude in the even bits).
/// All zero is "no cell" (a neighbour excluded from the search).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cell {
    pub bits: u64,
    pub step: u8,
}

impl Cell {
    fn is_none(&self) -> bool {
        self.bits == 0 && self.step == 0
    }

    /// The cell's bits as the 52-bit score prefix they stand for.
    fn align52(&self) -> u64 {
        self.bits << (52 - u32::from(self.step) * 2)
    }
}

#[derive(Clone, Copy, Debug)]
struct Range {
    min: f64,
    max: f64,
}

const LON_RANGE: Range = Range {
    min: LON_MIN,
    max: LON_MAX,
};
const LAT_RANGE: Range = Range {
    min: LAT_MIN,
    max: LAT_MAX,
};

#[derive(Clone, Copy, Debug)]
struct Area {
    lon: Range,
    lat: Range,
}

/// Spreads the 32 bits of `v` to the even bit positions of a u64.
fn spread(v: u32) -> u64 {
    let mut x = u64::from(v);
    x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x << 2)) & 0x3333_3333_3333_3333;
    (x | (x << 1)) & 0x5555_5555_5555_5555
}

/// Gathers the even bits of `v` into a u32 (the inverse of `spread`).
fn gather(v: u64) -> u32 {
    let mut x = v & 0x5555_5555_5555_5555;
    x = (x | (x >> 1)) & 0x3333_3333_3333_3333;
    x = (x | (x >> 2)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x >> 4)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x >> 8)) & 0x0000_FFFF_0000_FFFF;
    ((x | (x >> 16)) & 0x0000_0000_FFFF_FFFF) as u32
}

fn encode_in(lon_r: Range, lat_r: Range, lon: f64, lat: f64, step: u8) -> Option<Cell> {
    if step == 0 || step > 32 {
        return None;
    }
    if !(LON_MIN..=LON_MAX).contains(&lon) || !(LAT_MIN..=LAT_MAX).contains(&lat) {
        return None;
    }
    if lat < lat_r.min || lat > lat_r.max || lon < lon_r.min || lon > lon_r.max {
        return None;
    }
    let scale = (1u64 << step) as f64;
    let lat_off = (lat - lat_r.min) / (lat_r.max - lat_r.min) * scale;
    let lon_off = (lon - lon_r.min) / (lon_r.max - lon_r.min) * scale;
    // Truncating, as C's conversion to an unsigned 32-bit integer does.
    Some(Cell {
        bits: spread(lat_off as u32) | (spread(lon_off as u32) << 1),
        step,
    })
}

/// The cell of `step` bits holding a position in the GEO ranges.
fn encode(lon: f64, lat: f64, step: u8) -> Option<Cell> {
    encode_in(LON_RANGE, LAT_RANGE, lon, lat, step)
}

fn decode(cell: Cell) -> Option<Area> {
    if cell.is_none() {
        return None;
    }
    let (ilat, ilon) = (gather(cell.bits), gather(cell.bits >> 1));
    let div = (1u64 << cell.step) as f64;
    let lat_scale = LAT_RANGE.max - LAT_RANGE.min;
    let lon_scale = LON_RANGE.max - LON_RANGE.min;
    // `+ 1` wraps in 32 bits, as in Redis.
    let edge = |i: u32, min: f64, scale: f64| min + (f64::from(i) * 1.0 / div) * scale;
    Some(Area {
        lat: Range {
            min: edge(ilat, LAT_RANGE.min, lat_scale),
            max: edge(ilat.wrapping_add(1), LAT_RANGE.min, lat_scale),
        },
        lon: Range {
            min: edge(ilon, LON_RANGE.min, lon_scale),
            max: edge(ilon.wrapping_add(1), LON_RANGE.min, lon_scale),
        },
    })
}

/// C's `(uint64_t)` conversion of a double as x86-64 code does it (scores of
/// members not added by GEOADD can be anything, and Redis decodes them anyway).
fn c_to_u64(d: f64) -> u64 {
    const TWO63: f64 = 9_223_372_036_854_775_808.0;
    let trunc = |v: f64| -> u64 {
        if v.is_nan() || !(-TWO63..TWO63).contains(&v) {
            1 << 63
        } else {
            v as i64 as u64
        }
    };
    if d >= TWO63 {
        trunc(d - TWO63) ^ (1 << 63)
    } else {
        trunc(d)
    }
}

/// The 52-bit hash of a position (its sorted-set score), `None` outside the GEO
/// ranges.
pub fn hash_of(lon: f64, lat: f64) -> Option<u64> {
    encode(lon, lat, STEP_MAX).map(|c| c.align52())
}

/// The position (longitude, latitude) a score stands for: its cell's centre,
/// clamped to the GEO ranges.
pub fn position_of(score: f64) -> (f64, f64) {
    let cell = Cell {
        bits: c_to_u64(score),
        step: STEP_MAX,
    };
    // A full-precision cell is never the empty cell, so decoding succeeds.
    let Some(a) = decode(cell) else {
        return (0.0, 0.0);
    };
    let lon = ((a.lon.min + a.lon.max) / 2.0).clamp(LON_MIN, LON_MAX);
    let lat = ((a.lat.min + a.lat.max) / 2.0).clamp(LAT_MIN, LAT_MAX);
    (lon, lat)
}

/// The standard 11-character geohash of a score's position (latitude range ±90,
/// as geohash.org uses, not the ±85 of the scores; the 11th character is always
/// `0` as only 52 bits are known).
pub fn geohash_string(score: f64) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";
    let (lon, lat) = position_of(score);
    let world = |min, max| Range { min, max };
    let bits = encode_in(world(-180.0, 180.0), world(-90.0, 90.0), lon, lat, STEP_MAX)
        .map_or(0, |c| c.bits);
    (0..11)
        .map(|i| {
            let idx = if i == 10 {
                0
            } else {
                (bits >> (52 - (i + 1) * 5)) & 0x1f
            };
            ALPHABET[idx as usize] as char
        })
        .collect()
}

fn deg_rad(deg: f64) -> f64 {
    deg * DEG_TO_RAD
}

fn rad_deg(rad: f64) -> f64 {
    rad / DEG_TO_RAD
}

/// Distance along a meridian.
fn lat_distance(lat1: f64, lat2: f64) -> f64 {
    EARTH_RADIUS_M * (deg_rad(lat2) - deg_rad(lat1)).abs()
}

/// Haversine great-circle distance in meters.
pub fn distance(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let v = ((deg_rad(lon2) - deg_rad(lon1)) / 2.0).sin();
    if v == 0.0 {
        return lat_distance(lat1, lat2);
    }
    let (lat1r, lat2r) = (deg_rad(lat1), deg_rad(lat2));
    let u = ((lat2r - lat1r) / 2.0).sin();
    let a = u * u + lat1r.cos() * lat2r.cos() * v * v;
    2.0 * EARTH_RADIUS_M * a.sqrt().asin()
}

/// What a search covers, in the unit its figures were given in.
#[derive(Clone, Copy, Debug)]
pub enum Extent {
    Radius(f64),
    Box { width: f64, height: f64 },
}

/// A search area: a circle or an axis-aligned box around a centre.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub lon: f64,
    pub lat: f64,
    /// Meters per unit of the extent.
    pub to_meters: f64,
    pub extent: Extent,
}

impl Shape {
    /// The distance from the centre in meters if the position is inside.
    pub fn contains(&self, lon: f64, lat: f64) -> Option<f64> {
        match self.extent {
            Extent::Radius(r) => {
                let d = distance(self.lon, self.lat, lon, lat);
                // Near the antipode rounding can make the distance NaN: not
                // "farther than r", so Redis keeps the point.
                if d > r * self.to_meters {
                    None
                } else {
                    Some(d)
                }
            }
            Extent::Box { width, height } => {
                let (w, h) = (width * self.to_meters, height * self.to_meters);
                // The cheaper latitude test first, as Redis does.
                if lat_distance(lat, self.lat) > h / 2.0 {
                    return None;
                }
                if distance(lon, lat, self.lon, lat) > w / 2.0 {
                    return None;
                }
                Some(distance(self.lon, self.lat, lon, lat))
            }
        }
    }

    /// (min lon, min lat, max lon, max lat) enclosing the shape; the box's sides
    /// bend with latitude, so the wider edge decides.
    fn bounds(&self) -> [f64; 4] {
        let (half_h, half_w) = match self.extent {
            Extent::Radius(r) => (r, r),
            Extent::Box { width, height } => (height / 2.0, width / 2.0),
        };
        let height = self.to_meters * half_h;
        let width = self.to_meters * half_w;
        let lat_delta = rad_deg(height / EARTH_RADIUS_M);
        let lon_top = rad_deg(width / EARTH_RADIUS_M / deg_rad(self.lat + lat_delta).cos());
        let lon_bottom = rad_deg(width / EARTH_RADIUS_M / deg_rad(self.lat - lat_delta).cos());
        let lon_delta = if self.lat < 0.0 { lon_bottom } else { lon_top };
        [
            self.lon - lon_delta,
            self.lat - lat_delta,
            self.lon + lon_delta,
            self.lat + lat_delta,
        ]
    }

    /// The score ranges `[min, max)` to scan: the centre's cell and its
    /// neighbours, in Redis's order (centre, N, S, E, W, NE, NW, SE, SW), with
    /// the ones that cannot hold a match left out.
    pub fn score_ranges(&self) -> Vec<(f64, f64)> {
        let [min_lon, min_lat, max_lon, max_lat] = self.bounds();
        let radius_m = match self.extent {
            Extent::Radius(r) => r,
            Extent::Box { width, height } => {
                ((width / 2.0) * (width / 2.0) + (height / 2.0) * (height / 2.0)).sqrt()
            }
        } * self.to_meters;
        let mut step = estimate_step(radius_m, self.lat);
        let centre = |step| encode(self.lon, self.lat, step).unwrap_or(Cell { bits: 0, step });
        let mut cell = centre(step);
        let mut n = neighbours(cell);
        let area_of = |c| decode(c).map(|a: Area| (a.lat, a.lon));
        let too_coarse = {
            let [north, south, east, west] = [n[0], n[1], n[2], n[3]].map(area_of);
            north.is_some_and(|(lat, _)| lat.max < max_lat)
                || south.is_some_and(|(lat, _)| lat.min > min_lat)
                || east.is_some_and(|(_, lon)| lon.max < max_lon)
                || west.is_some_and(|(_, lon)| lon.min > min_lon)
        };
        if step > 1 && too_coarse {
            step -= 1;
            cell = centre(step);
            n = neighbours(cell);
        }
        if step >= 2 {
            if let Some(a) = decode(cell) {
                let none = Cell::default();
                let [north, south, east, west, ne, nw, se, sw] = &mut n;
                if a.lat.min < min_lat {
                    (*south, *sw, *se) = (none, none, none);
                }
                if a.lat.max > max_lat {
                    (*north, *ne, *nw) = (none, none, none);
                }
                if a.lon.min < min_lon {
                    (*west, *sw, *nw) = (none, none, none);
                }
                if a.lon.max > max_lon {
                    (*east, *se, *ne) = (none, none, none);
                }
            }
        }
        let cells = std::iter::once(cell).chain(n);
        let mut out = Vec::with_capacity(9);
        // Huge radii make neighbours coincide: a cell equal to the one scanned
        // just before is skipped (Redis never compares with the centre).
        let mut last: Option<Cell> = None;
        for (i, c) in cells.enumerate() {
            if c.is_none() || (i > 0 && last == Some(c)) {
                continue;
            }
            let min = c.align52();
            let max = Cell {
                bits: c.bits + 1,
                step: c.step,
            }
            .align52();
            out.push((min as f64, max as f64));
            last = if i == 0 { None } else { Some(c) };
        }
        out
    }
}

/// The cell size (bits per coordinate) whose 3×3 block covers a radius.
fn estimate_step(mut range_m: f64, lat: f64) -> u8 {
    if range_m == 0.0 {
        return 26;
    }
    let mut step: i32 = 1;
    while range_m < MERCATOR_MAX {
        range_m *= 2.0;
        step += 1;
    }
    step -= 2;
    // Meridians converge towards the poles: use bigger cells there.
    if !(-66.0..=66.0).contains(&lat) {
        step -= 1;
        if !(-80.0..=80.0).contains(&lat) {
            step -= 1;
        }
    }
    step.clamp(1, 26) as u8
}

/// Moves a cell by one along longitude (odd bits) or latitude (even bits),
/// wrapping around.
fn shift(cell: Cell, lon: bool, forward: bool) -> Cell {
    const ODD: u64 = 0xAAAA_AAAA_AAAA_AAAA;
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let (moved_mask, kept_mask) = if lon { (ODD, EVEN) } else { (EVEN, ODD) };
    let width = 64 - u32::from(cell.step) * 2;
    // The other coordinate's bits, set so that carries and borrows cross them.
    let filler = kept_mask >> width;
    let mut v = cell.bits & moved_mask;
    if forward {
        v = v.wrapping_add(filler + 1);
    } else {
        v = (v | filler).wrapping_sub(filler + 1);
    }
    v &= moved_mask >> width;
    Cell {
        bits: v | (cell.bits & kept_mask),
        step: cell.step,
    }
}

/// N, S, E, W, NE, NW, SE, SW.
fn neighbours(c: Cell) -> [Cell; 8] {
    let north = shift(c, false, true);
    let south = shift(c, false, false);
    [
        north,
        south,
        shift(c, true, true),
        shift(c, true, false),
        shift(north, true, true),
        shift(north, true, false),
        shift(south, true, true),
        shift(south, true, false),
    ]
}

/// Redis's `fixedpoint_d2string(…, 4)`: a distance with four decimals, rounded
/// half to even (`llrint`).
pub fn format_distance(d: f64) -> String {
    if d == 0.0 {
        return "0.0000".into();
    }
    let scaled = (d * 10_000.0).round_ties_even();
    // x86's answer for a value out of range (or NaN): the most negative integer.
    let v = if scaled.is_nan()
        || !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&scaled)
    {
        i64::MIN
    } else {
        scaled as i64
    };
    let sign = if v < 0 { "-" } else { "" };
    let m = v.unsigned_abs();
    format!("{sign}{}.{:04}", m / 10_000, m % 10_000)
}

/// Redis's `ld2string(…, LD_STR_HUMAN)` of a coordinate: `%.17f` without its
/// trailing zeros.
pub fn format_coord(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let s = format!("{v:.17}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_gather_are_inverse() {
        for v in [0u32, 1, 0xFFFF_FFFF, 0x1234_5678, 1 << 26] {
            assert_eq!(gather(spread(v)), v);
        }
        assert_eq!(spread(0b11), 0b101);
    }

    #[test]
    fn scores_match_redis() {
        // GEOADD nyc … then ZRANGE nyc 0 -1 WITHSCORES on Redis 7.
        assert_eq!(hash_of(-74.0131604, 40.7126674), Some(1791873972053020));
        assert_eq!(hash_of(-73.7858139, 40.6428986), Some(1791895905559723));
        assert_eq!(hash_of(13.361389, 38.115556), Some(3479099956230698));
        assert_eq!(hash_of(200.0, 10.0), None);
        assert_eq!(hash_of(10.0, 85.06), None);
    }

    #[test]
    fn neighbours_wrap() {
        let c = Cell { bits: 0, step: 1 };
        let n = neighbours(c);
        // One bit per axis: every move flips that axis's bit.
        assert_eq!(
            n[0],
            Cell {
                bits: 0b01,
                step: 1
            }
        );
        assert_eq!(n[1], n[0]);
        assert_eq!(
            n[2],
            Cell {
                bits: 0b10,
                step: 1
            }
        );
        assert_eq!(
            n[4],
            Cell {
                bits: 0b11,
                step: 1
            }
        );
    }

    #[test]
    fn formats() {
        assert_eq!(format_distance(166274.15156960033), "166274.1516");
        assert_eq!(format_distance(0.0), "0.0000");
        assert_eq!(format_distance(0.775), "0.7750");
        assert_eq!(format_distance(0.00001), "0.0000");
        assert_eq!(format_distance(f64::NAN), "-922337203685477.5808");
        assert_eq!(format_coord(13.361389338970184), "13.36138933897018433");
        assert_eq!(format_coord(-0.0), "0");
        assert_eq!(format_coord(10.0), "10");
    }
}
