//! The flags a request got, kept until its log to count them: the first
//! sixteen inside the request's context, the rest on the heap, so the usual
//! request allocates nothing for them.

const INLINE: usize = 16;

/// `(flag, variant)` pairs in the order pushed.
pub struct Applied {
    inline: [(u16, u16); INLINE],
    len: usize,
    more: Vec<(u16, u16)>,
}

impl Applied {
    pub fn new() -> Self {
        Applied {
            inline: [(0, 0); INLINE],
            len: 0,
            more: Vec::new(),
        }
    }

    pub fn push(&mut self, flag_variant: (u16, u16)) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = flag_variant;
                self.len += 1;
            }
            None => self.more.push(flag_variant),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        self.inline
            .iter()
            .take(self.len)
            .chain(self.more.iter())
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_pair_in_order_past_the_inline_ones() {
        let mut a = Applied::new();
        assert!(a.is_empty());
        for i in 0..40u16 {
            a.push((i, i % 3));
        }
        let got: Vec<_> = a.iter().collect();
        let want: Vec<_> = (0..40u16).map(|i| (i, i % 3)).collect();
        assert_eq!(got, want);
        assert!(!a.is_empty());
    }
}
