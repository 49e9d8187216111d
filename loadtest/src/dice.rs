//! Randomness of the load: a small seeded generator (runs repeat with the
//! same seed), exponential inter-arrival times and a Zipf distribution over
//! the catalogue.

/// xorshift64*: fast, seeded, good enough to pick requests.
#[derive(Debug, Clone)]
pub(crate) struct Dice(u64);

impl Dice {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// An exponentially distributed gap with mean `1 / rate` seconds: the
    /// arrivals of a Poisson process, as independent users produce them.
    pub(crate) fn exponential(&mut self, rate: f64) -> f64 {
        -(1.0 - self.unit()).ln() / rate
    }

    /// Index into `weights` chosen in proportion to the weights.
    pub(crate) fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut roll = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            if roll < u64::from(*w) {
                return i;
            }
            roll -= u64::from(*w);
        }
        weights.len() - 1
    }
}

/// Zipf over 0..n: rank k drawn with probability proportional to 1/(k+1)^s.
/// s = 1 puts about 80 % of the draws of 10,000 articles on the busiest
/// 20 %, as order lines do.
#[derive(Debug, Clone)]
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub(crate) fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 0..n {
            sum += 1.0 / ((k + 1) as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Self { cdf }
    }

    pub(crate) fn sample(&self, dice: &mut Dice) -> usize {
        let u = dice.unit();
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::{Dice, Zipf};

    #[test]
    fn zipf_puts_most_draws_on_the_busiest_fifth() {
        let zipf = Zipf::new(10_000, 1.0);
        let mut dice = Dice::new(7);
        let draws = 100_000;
        let busy = (0..draws).filter(|_| zipf.sample(&mut dice) < 2_000).count();
        let share = busy as f64 / f64::from(draws);
        assert!((0.78..0.88).contains(&share), "share of the busiest 20 %: {share}");
        // Every rank can be drawn; the last one is in range.
        assert!((0..draws).map(|_| zipf.sample(&mut dice)).all(|k| k < 10_000));
    }

    #[test]
    fn exponential_gaps_average_the_inverse_rate() {
        let mut dice = Dice::new(3);
        let n = 200_000;
        let mean = (0..n).map(|_| dice.exponential(250.0)).sum::<f64>() / f64::from(n);
        assert!((mean - 0.004).abs() < 0.0001, "mean gap {mean}");
    }

    #[test]
    fn weighted_choice_follows_the_weights() {
        let mut dice = Dice::new(11);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[dice.weighted(&[80, 17, 3])] += 1;
        }
        assert!((79_000..81_000).contains(&counts[0]), "{counts:?}");
        assert!((2_500..3_500).contains(&counts[2]), "{counts:?}");
        assert_eq!(Dice::new(5).weighted(&[0, 1]), 1);
    }
}
