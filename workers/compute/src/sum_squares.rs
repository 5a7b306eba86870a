//! sum_squares n: split 1..=n into P equal ranges, each computed exactly by any worker.

use num_bigint::BigUint;
use serde_json::Number;
use sluice_messages::compute::PartRequest;

/// Largest n accepted: the answer (~3.3·10^53) stays exact through big integers.
pub const MAX_N: u64 = 1_000_000_000_000_000_000;
/// Most parts a job may be split into.
pub const MAX_PARTS: u32 = 1_024;

/// Checks n as written in the job: a whole number from 1 to 10^18.
pub fn parse_n(n: &Number) -> Result<u64, String> {
    match n.as_u64() {
        Some(n) if (1..=MAX_N).contains(&n) => Ok(n),
        _ => Err(format!("n must be a whole number from 1 to 10^18, got {n}")),
    }
}

/// Splits 1..=n into `parts` consecutive ranges whose sizes differ by at most one (the first
/// ones take the remainder); never more ranges than numbers.
pub fn split(n: u64, parts: u32) -> Result<Vec<PartRequest>, String> {
    if parts == 0 || parts > MAX_PARTS {
        return Err(format!("parts must be from 1 to {MAX_PARTS}, got {parts}"));
    }
    let count = u64::from(parts).min(n);
    let (base, extra) = (n / count, n % count);
    let mut start = 1;
    Ok((0..count)
        .map(|i| {
            let len = base + u64::from(i < extra);
            let range = PartRequest {
                n,
                part: i as u32,
                parts: count as u32,
                a: start,
                b: start + len - 1,
            };
            start += len;
            range
        })
        .collect())
}

/// 1² + … + m², exactly.
fn prefix_sum(m: u64) -> BigUint {
    let m = BigUint::from(m);
    let m1 = &m + 1u32;
    let m2: BigUint = &m * 2u32 + 1u32;
    m * m1 * m2 / 6u32
}

/// a² + … + b², exactly, as a JSON number.
pub fn sum_of_squares(a: u64, b: u64) -> Result<Number, String> {
    if a == 0 || a > b || b > MAX_N {
        return Err(format!("invalid range {a}..={b}"));
    }
    let sum = prefix_sum(b) - prefix_sum(a - 1);
    sum.to_string()
        .parse()
        .map_err(|e| format!("cannot encode {sum}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_in_three_parts_is_the_seed_example() {
        let parts = split(9, 3).unwrap();
        let ranges: Vec<(u64, u64)> = parts.iter().map(|p| (p.a, p.b)).collect();
        assert_eq!(ranges, vec![(1, 3), (4, 6), (7, 9)]);
        let sums: Vec<String> = parts
            .iter()
            .map(|p| sum_of_squares(p.a, p.b).unwrap().to_string())
            .collect();
        assert_eq!(sums, vec!["14", "77", "194"]);
    }

    #[test]
    fn uneven_splits_cover_every_number_once() {
        let parts = split(10, 3).unwrap();
        let ranges: Vec<(u64, u64)> = parts.iter().map(|p| (p.a, p.b)).collect();
        assert_eq!(ranges, vec![(1, 4), (5, 7), (8, 10)]);
        assert_eq!(split(2, 5).unwrap().len(), 2);
        assert!(split(5, 0).is_err());
    }

    #[test]
    fn the_largest_n_is_exact() {
        // n(n+1)(2n+1)/6 for n = 10^18, worked out by hand.
        let expected = "333333333333333333833333333333333333500000000000000000";
        assert_eq!(sum_of_squares(1, MAX_N).unwrap().to_string(), expected);
        let halves: Vec<PartRequest> = split(MAX_N, 2).unwrap();
        let total: BigUint = halves
            .iter()
            .map(|p| {
                sum_of_squares(p.a, p.b)
                    .unwrap()
                    .to_string()
                    .parse::<BigUint>()
                    .unwrap()
            })
            .sum();
        assert_eq!(total.to_string(), expected);
    }

    #[test]
    fn n_outside_the_range_is_refused() {
        let n = |s: &str| s.parse::<Number>().unwrap();
        assert_eq!(parse_n(&n("9")), Ok(9));
        assert!(parse_n(&n("-5")).is_err());
        assert!(parse_n(&n("0")).is_err());
        assert!(parse_n(&n("2.5")).is_err());
        assert!(parse_n(&n("1000000000000000000000000000000")).is_err());
    }
}
