//! TCP window tracking for conntrack, nf_conntrack's in essence, shared by the IPv4 (`CT_V4`)
//! and IPv6 (`CT_V6`) tables: both entries keep the same three fields per direction (`flags`,
//! `ack`, `wnd`), and this module is the whole logic over them (the programs only load the
//! segment's fields and look up the receiver's entry for a RST).
//!
//! Each direction's entry records the highest acknowledgement it sent with the window beside it,
//! and its SYN's window scale (windows are scaled when both SYNs announced one, RFC 7323; a
//! SYN's own window never is). A RST is judged against its receiver's window (RFC 793/5961, as
//! nf_conntrack's `tcp_in_window` and its RST handling do):
//! - outside the window, a blind RST: invalid (nf_conntrack marks it invalid and NAT never
//!   applies to it; the programs drop and count it, `invalid_rst`); the flow stays open;
//! - exactly at the receiver's next expected byte, or anywhere in the window while the flow is
//!   not established: it closes the flow;
//! - elsewhere in the window: it passes and the flow stays as it is (the receiver answers with
//!   a challenge ACK, RFC 5961, as nf_conntrack keeps the state for);
//! - a RST answering a SYN must acknowledge it;
//! - a flow picked up mid-stream (a SYN not seen) is judged liberally, as nf_conntrack's pickup
//!   is: any RST closes it.
use crate::{CT_F_ACKED, CT_F_REPLY, CT_F_SYN, CT_WSCALE_NONE};

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The fields of a TCP segment the tracking reads (host byte order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub seq: u32,
    pub ack: u32,
    pub win: u16,
    /// The TCP flags byte.
    pub flags: u8,
    /// A SYN's window scale option (at most 14), or [`CT_WSCALE_NONE`]; read only when
    /// [`wants_scale`] says so.
    pub wscale: u16,
}

/// What a RST does to its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rst {
    /// In the window and exact (or the flow is not established, or picked up mid-stream):
    /// the flow is closed.
    Close,
    /// In the window but not exact: passed on, the flow stays as it is.
    Keep,
    /// Outside the window (or a RST to a SYN that does not acknowledge it): not translated.
    Invalid,
}

/// Whether the segment is the SYN of its direction not yet seen, whose window scale option
/// [`on_segment`] needs (the programs parse TCP options only then).
#[inline(always)]
pub const fn wants_scale(entry_flags: u8, seg_flags: u8) -> bool {
    seg_flags & (TCP_SYN | TCP_RST) == TCP_SYN && entry_flags & CT_F_SYN == 0
}

/// Whether `a` comes after `b` in sequence space.
#[inline(always)]
pub const fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// A segment other than a RST from the direction whose entry holds `flags`, `ack`, `wnd`:
/// a SYN records its window scale (and, for the originator's, its end in `ack` until an ACK
/// comes); a segment with ACK records its acknowledgement and window when the acknowledgement
/// moves forward (or is the first one).
#[inline(always)]
pub fn on_segment(flags: &mut u8, ack: &mut u32, wnd: &mut u16, s: &Segment) {
    let was = *flags;
    let mut scale = *wnd & 15;
    if s.flags & TCP_SYN != 0 && was & CT_F_SYN == 0 {
        scale = if s.wscale > 14 && s.wscale != CT_WSCALE_NONE { 14 } else { s.wscale };
        *flags = was | CT_F_SYN;
        if s.flags & TCP_ACK == 0 {
            // The originator's SYN: until its first ACK, `ack` holds the SYN's end (a RST
            // answering the SYN must acknowledge it).
            *ack = s.seq.wrapping_add(1);
            *wnd = scale;
            return;
        }
    }
    if s.flags & TCP_ACK == 0 {
        return;
    }
    // Whether `ack` holds an acknowledgement already: the responder's from its SYN-ACK on, the
    // originator's from its first ACK on (before, its SYN's end).
    let valid = if was & CT_F_REPLY != 0 { was & CT_F_SYN != 0 } else { was & CT_F_ACKED != 0 };
    if valid && after(*ack, s.ack) {
        return; // an older acknowledgement (reordered): the window beside the newest stays
    }
    let units = (s.win as u32).div_ceil(16);
    let units = if units > 4095 { 4095 } else { units } as u16;
    *wnd = (units << 4) | scale;
    *ack = s.ack;
}

/// A RST from the direction whose entry holds `flags`/`wnd` (its sender), against the state of
/// the other direction (its receiver: `(flags, ack, wnd)`, None when that entry is gone).
#[inline(always)]
pub fn judge_rst(sender_flags: u8, sender_wnd: u16, receiver: Option<(u8, u32, u16)>, s: &Segment) -> Rst {
    let Some((rf, rack, rwnd)) = receiver else { return Rst::Close };
    if rf & CT_F_SYN == 0 {
        // A receiver whose SYN was never seen: picked up mid-stream (liberal).
        return Rst::Close;
    }
    if rf & (CT_F_ACKED | CT_F_REPLY) == 0 {
        // The originator sent only its SYN: a RST answering it acknowledges it (RFC 793).
        return if s.flags & TCP_ACK != 0 && s.ack == rack { Rst::Close } else { Rst::Invalid };
    }
    if sender_flags & CT_F_SYN == 0 {
        return Rst::Close; // the sender picked up mid-stream
    }
    // The receiver's window: a SYN-ACK's (the responder has sent nothing else with an ACK yet)
    // is never scaled; later ones are, by the receiver's own scale, when both SYNs had one.
    let rs = rwnd & 15;
    let scaled = rf & CT_F_ACKED != 0 && rs != CT_WSCALE_NONE && sender_wnd & 15 != CT_WSCALE_NONE;
    let win = ((rwnd >> 4) as u32 * 16) << if scaled { rs as u32 } else { 0 };
    let off = s.seq.wrapping_sub(rack);
    if off > win {
        return Rst::Invalid;
    }
    if off == 0 || (sender_flags | rf) & CT_F_ACKED == 0 { Rst::Close } else { Rst::Keep }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACK: u8 = TCP_ACK;
    const SYN: u8 = TCP_SYN;
    const RST: u8 = TCP_RST;

    #[derive(Default, Clone, Copy)]
    struct E {
        flags: u8,
        ack: u32,
        wnd: u16,
    }

    fn seg(seq: u32, ack: u32, flags: u8, win: u16, wscale: u16) -> Segment {
        Segment { seq, ack, win, flags, wscale }
    }

    fn feed(e: &mut E, s: Segment) {
        on_segment(&mut e.flags, &mut e.ack, &mut e.wnd, &s);
        // What `touch` adds after the tracking: ACK without SYN marks the direction ACKED.
        if s.flags & (SYN | ACK | RST) == ACK {
            e.flags |= CT_F_ACKED;
        }
    }

    fn rst(from: &E, to: &E, seq: u32, ack: u32, flags: u8) -> Rst {
        judge_rst(from.flags, from.wnd, Some((to.flags, to.ack, to.wnd)), &seg(seq, ack, flags, 0, 0))
    }

    /// Handshake with scale 7 both ways, client window 502 << 7 at 5101.
    fn established(cs: u16, ss: u16) -> (E, E) {
        let mut c = E::default();
        let mut s = E { flags: CT_F_REPLY, ..E::default() };
        assert!(wants_scale(c.flags, SYN));
        feed(&mut c, seg(1000, 0, SYN, 64240, cs));
        assert_eq!((c.ack, c.wnd & 15), (1001, cs));
        assert!(!wants_scale(c.flags, SYN));
        feed(&mut s, seg(5000, 1001, SYN | ACK, 65160, ss));
        assert_eq!((s.ack, s.wnd >> 4, s.wnd & 15), (1001, 65160u32.div_ceil(16) as u16, ss));
        feed(&mut c, seg(1001, 5001, ACK, 502, 0));
        feed(&mut s, seg(5001, 1001, ACK | 0x08, 509, 0));
        feed(&mut c, seg(1001, 5101, ACK, 502, 0));
        (c, s)
    }

    #[test]
    fn rsts_against_the_scaled_window() {
        let (c, s) = established(7, 7);
        assert_eq!((c.ack, c.wnd >> 4, c.wnd & 15), (5101, 32, 7));
        // From the sandbox (s) to the client (c): window 512 << 7 = 65,536 from 5101.
        assert_eq!(rst(&s, &c, 5101 + 512 * 1024, 0, RST), Rst::Invalid);
        assert_eq!(rst(&s, &c, 5101 + 60_000, 0, RST), Rst::Keep);
        assert_eq!(rst(&s, &c, 5101 + 70_000, 0, RST), Rst::Invalid);
        assert_eq!(rst(&s, &c, 5100, 0, RST), Rst::Invalid, "before the window");
        assert_eq!(rst(&s, &c, 5101, 0, RST), Rst::Close);
        assert_eq!(rst(&c, &s, 1001, 0, RST | ACK), Rst::Close);
    }

    #[test]
    fn scaling_needs_both_syns() {
        let (c, s) = established(7, CT_WSCALE_NONE);
        assert_eq!(rst(&s, &c, 5101 + 60_000, 0, RST), Rst::Invalid);
        assert_eq!(rst(&s, &c, 5101 + 400, 0, RST), Rst::Keep);
    }

    #[test]
    fn a_syn_acks_window_is_not_scaled() {
        // Client RST while the responder has only sent its SYN-ACK (65,160 unscaled, scale 7).
        let mut c = E::default();
        let mut s = E { flags: CT_F_REPLY, ..E::default() };
        feed(&mut c, seg(1000, 0, SYN, 64240, 7));
        feed(&mut s, seg(5000, 1001, SYN | ACK, 65160, 7));
        assert_eq!(rst(&c, &s, 1001 + 65_000, 0, RST), Rst::Close, "in the window, handshake: closes");
        assert_eq!(rst(&c, &s, 1001 + 70_000, 0, RST), Rst::Invalid);
    }

    #[test]
    fn a_rst_to_a_syn_must_acknowledge_it() {
        let mut c = E::default();
        let s = E { flags: CT_F_REPLY, ..E::default() };
        feed(&mut c, seg(9000, 0, SYN, 64240, 7));
        assert_eq!(rst(&s, &c, 0, 12345, RST | ACK), Rst::Invalid);
        assert_eq!(rst(&s, &c, 0, 9001, RST), Rst::Invalid, "no ACK flag");
        assert_eq!(rst(&s, &c, 0, 9001, RST | ACK), Rst::Close);
    }

    #[test]
    fn pickup_is_liberal_and_old_acks_do_not_move_the_window_back() {
        let mut c = E::default();
        let mut s = E { flags: CT_F_REPLY, ..E::default() };
        feed(&mut c, seg(777_777, 1, ACK, 502, 0));
        feed(&mut s, seg(1, 777_777, ACK, 502, 0));
        assert_eq!(rst(&c, &s, 0x4000_0000, 0, RST), Rst::Close);
        assert_eq!(judge_rst(0, 0, None, &seg(5, 0, RST, 0, 0)), Rst::Close, "receiver gone");
        let (mut c, _) = established(7, 7);
        feed(&mut c, seg(1001, 5050, ACK, 100, 0));
        assert_eq!((c.ack, c.wnd >> 4), (5101, 32), "a reordered older ACK");
        feed(&mut c, seg(1001, 5200, ACK, 65535, 0));
        assert_eq!((c.ack, c.wnd >> 4, c.wnd & 15), (5200, 4095, 7), "a 65,535-byte window, clamped");
    }
}
