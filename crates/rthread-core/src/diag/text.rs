//! The text report of a [`Snapshot`], in the spirit of `jstack -l`: cycles first, then every
//! thread with what it waits for and holds.

use core::fmt::{self, Write};
use std::time::Duration;

use super::graph::{Certainty, Cycle, Snapshot, ThreadInfo};
use super::registry::{LockKind, ThreadSlot, WaitFor};
use super::sites::{site, SiteId};
use crate::deadline::Deadline;

/// `1.234s`, `56ms`, `789µs`: short and precise enough for a report.
fn duration(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.3}s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}µs", d.as_micros())
    }
}

fn since(now: Deadline, then: Deadline) -> String {
    duration(Duration::from_nanos(
        now.as_nanos().saturating_sub(then.as_nanos()),
    ))
}

fn site_text(id: Option<SiteId>) -> Option<String> {
    id.and_then(site).map(|s| s.to_string())
}

/// `thread "name" (slot 3, ident 0x7f…, native 1234)`.
fn thread_label(t: &ThreadInfo) -> String {
    let name = t
        .name
        .as_deref()
        .map_or_else(String::new, |n| format!("{n:?} "));
    format!(
        "thread {name}(slot {}, ident {:#x}, native {})",
        t.slot.index(),
        t.ident,
        t.native_id
    )
}

/// A short label for a thread that may be missing from the snapshot.
fn short_label(s: &Snapshot, slot: ThreadSlot) -> String {
    match s.thread(slot) {
        Some(t) => match &t.name {
            Some(n) => format!("thread {n:?} (slot {})", slot.index()),
            None => format!("thread slot {}", slot.index()),
        },
        None => format!("ended thread (slot {})", slot.index()),
    }
}

/// `lock #7 (created at file:line)`, `RLock #8`, `the end of thread "b" (slot 4)`.
fn what(s: &Snapshot, w: WaitFor, created: Option<SiteId>) -> String {
    let at = site_text(created).map_or_else(String::new, |x| format!(" (created at {x})"));
    match w {
        WaitFor::Lock(id) => format!("lock #{}{at}", id.0),
        WaitFor::RLock(id) => format!("RLock #{}{at}", id.0),
        WaitFor::Join(t) => format!("the end of {}", short_label(s, t)),
        WaitFor::JoinIdent(ident) => match s.thread_by_ident(ident) {
            Some(t) => format!("the end of {}", short_label(s, t.slot)),
            None => format!("the end of thread ident {ident:#x}"),
        },
        WaitFor::Other { tag, object } => format!("object {object:#x} (kind {tag}){at}"),
    }
}

fn kind_text(k: Option<LockKind>) -> &'static str {
    match k {
        Some(LockKind::Mutex) => " [mutex]",
        Some(LockKind::Signal) => " [signal: released by other threads]",
        Some(LockKind::Reentrant) => " [reentrant]",
        None => "",
    }
}

fn cycle_text(out: &mut String, s: &Snapshot, c: &Cycle) -> fmt::Result {
    for e in &c.edges {
        let Some(t) = s.thread(e.from) else { continue };
        let Some(w) = &t.wait else { continue };
        writeln!(out, "  {}", thread_label(t))?;
        writeln!(
            out,
            "    waits {} for {}{}",
            since(s.taken_at, w.since),
            what(s, w.what, w.site),
            kind_text(e.lock_kind)
        )?;
        if !matches!(e.via, WaitFor::Join(_) | WaitFor::JoinIdent(_)) {
            writeln!(out, "    held by {}", short_label(s, e.to))?;
        }
    }
    Ok(())
}

fn thread_text(out: &mut String, s: &Snapshot, t: &ThreadInfo) -> fmt::Result {
    writeln!(out, "  {}", thread_label(t))?;
    match &t.wait {
        Some(w) => {
            write!(
                out,
                "    waiting {} for {}",
                since(s.taken_at, w.since),
                what(s, w.what, w.site)
            )?;
            if let (Some(h), false) = (
                w.holder,
                matches!(w.what, WaitFor::Join(_) | WaitFor::JoinIdent(_)),
            ) {
                write!(out, ", held by {}", short_label(s, h))?;
            }
            let mut notes = Vec::new();
            if w.timed {
                notes.push("timed");
            }
            if w.cancel_requested {
                notes.push("cancel requested");
            }
            if !w.stable {
                notes.push("moving");
            }
            write!(out, "{}", kind_text(w.lock_kind))?;
            if !notes.is_empty() {
                write!(out, " ({})", notes.join(", "))?;
            }
            writeln!(out)?;
        }
        None if t.torn => writeln!(out, "    (wait record changing too fast to read)")?,
        None => writeln!(out, "    not waiting")?,
    }
    for h in &t.held {
        let at = site_text(h.site).map_or_else(String::new, |x| format!(" (acquired at {x})"));
        writeln!(
            out,
            "    holding lock #{} for {}{at}",
            h.lock.0,
            since(s.taken_at, h.since)
        )?;
    }
    Ok(())
}

impl Snapshot {
    /// The report as text: cycles first ("Found 1 deadlock (certain):"), then every thread.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) -> fmt::Result {
        let cycles = self.cycles();
        for certainty in [Certainty::Certain, Certainty::Suspected] {
            let these: Vec<&Cycle> = cycles.iter().filter(|c| c.certainty == certainty).collect();
            if these.is_empty() {
                continue;
            }
            let (noun, adj) = match certainty {
                Certainty::Certain => ("deadlock", "certain"),
                Certainty::Suspected => ("possible deadlock", "suspected"),
            };
            let plural = if these.len() == 1 { "" } else { "s" };
            writeln!(out, "Found {} {noun}{plural} ({adj}):", these.len())?;
            for (i, c) in these.iter().enumerate() {
                if these.len() > 1 {
                    writeln!(out, " #{}", i + 1)?;
                }
                cycle_text(out, self, c)?;
            }
            writeln!(out)?;
        }
        writeln!(out, "Threads ({}):", self.threads.len())?;
        for t in &self.threads {
            thread_text(out, self, t)?;
        }
        Ok(())
    }
}
