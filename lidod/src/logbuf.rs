//! A service's recent output: a bounded ring of lines plus a live feed for
//! `lidoctl logs -f`.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::broadcast;

pub struct LogBuffer {
    lines: Mutex<VecDeque<String>>,
    capacity: usize,
    live: broadcast::Sender<String>,
}

impl LogBuffer {
    pub fn new(capacity: usize) -> Self {
        Self { lines: Mutex::new(VecDeque::with_capacity(capacity)), capacity, live: broadcast::channel(1024).0 }
    }

    pub fn push(&self, line: String) {
        {
            let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
            if lines.len() == self.capacity {
                lines.pop_front();
            }
            lines.push_back(line.clone());
        }
        let _ = self.live.send(line);
    }

    /// The last `n` lines, oldest first, and a feed of what comes after them.
    pub fn tail_and_follow(&self, n: usize) -> (Vec<String>, broadcast::Receiver<String>) {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        // Subscribing under the lock: no line falls between the two.
        let rx = self.live.subscribe();
        (lines.iter().skip(lines.len().saturating_sub(n)).cloned().collect(), rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_and_follows() {
        let b = LogBuffer::new(3);
        for i in 0..5 {
            b.push(format!("l{i}"));
        }
        let (tail, mut rx) = b.tail_and_follow(2);
        assert_eq!(tail, vec!["l3", "l4"]);
        assert_eq!(b.tail_and_follow(10).0, vec!["l2", "l3", "l4"]);
        b.push("l5".into());
        assert_eq!(rx.try_recv().unwrap(), "l5");
    }
}
