//! The maintenance window (`window:` in uphost.yaml): the days and hours a
//! run may change the cluster, and the dates it may not. A run outside it
//! does not start; a run that reaches its end pauses at the next step
//! boundary, saying when it may continue.

use serde::Deserialize;
use time::{Date, Duration, OffsetDateTime, Time, UtcOffset};

/// The window as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    /// Days it opens (`mon` … `sun`); every day when absent.
    #[serde(default)]
    pub days: Option<Vec<String>>,
    /// `HH:MM-HH:MM` (seconds allowed: `HH:MM:SS`); past midnight when the
    /// end is not after the start. All day when absent.
    #[serde(default)]
    pub hours: Option<String>,
    /// Dates (`YYYY-MM-DD`) it does not open on.
    #[serde(default)]
    pub except: Vec<String>,
    /// The offset from UTC its times are in (`+01:00`); UTC when absent.
    #[serde(default)]
    pub utc_offset: Option<String>,
    /// Or the IANA time zone its times are in (`Europe/Paris`): the
    /// offset of each moment, summer time included.
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// Where the window's times are.
#[derive(Debug, Clone, PartialEq)]
enum Zone {
    /// A fixed offset from UTC.
    Fixed(UtcOffset),
    /// An IANA time zone (its offset changes with summer time).
    Named(jiff::tz::TimeZone),
}

impl Zone {
    /// The offset in force at `t`.
    fn offset_at(&self, t: OffsetDateTime) -> UtcOffset {
        match self {
            Zone::Fixed(o) => *o,
            Zone::Named(tz) => jiff::Timestamp::from_second(t.unix_timestamp())
                .ok()
                .and_then(|ts| UtcOffset::from_whole_seconds(tz.to_offset(ts).seconds()).ok())
                .unwrap_or(UtcOffset::UTC),
        }
    }

    /// The moment the local date and time `d` `at` is, in this zone (a
    /// time that summer time skips is taken after the gap, one it repeats
    /// the first time).
    fn moment(&self, d: Date, at: Time) -> OffsetDateTime {
        match self {
            Zone::Fixed(o) => d.with_time(at).assume_offset(*o),
            Zone::Named(tz) => {
                let civil = jiff::civil::DateTime::new(
                    d.year() as i16,
                    u8::from(d.month()) as i8,
                    d.day() as i8,
                    at.hour() as i8,
                    at.minute() as i8,
                    at.second() as i8,
                    0,
                );
                civil
                    .ok()
                    .and_then(|c| tz.to_timestamp(c).ok())
                    .and_then(|ts| OffsetDateTime::from_unix_timestamp(ts.as_second()).ok())
                    .unwrap_or_else(|| d.with_time(at).assume_utc())
            }
        }
    }
}

/// A checked window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    days: [bool; 7],
    start: Time,
    /// How long it stays open once opened.
    length: Duration,
    except: Vec<Date>,
    zone: Zone,
    /// As written, for messages.
    text: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn time_of(s: &str) -> Option<Time> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    let n = |i: usize| -> Option<u8> { parts.get(i).map_or(Some(0), |p| p.parse().ok()) };
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
        return None;
    }
    Time::from_hms(n(0)?, n(1)?, n(2)?).ok()
}

impl RawWindow {
    /// Check it: what is wrong names the key and the form expected.
    pub fn check(&self) -> Result<Window, (&'static str, String)> {
        let mut days = [self.days.is_none(); 7];
        for d in self.days.iter().flatten() {
            let i = DAYS.iter().position(|x| x.eq_ignore_ascii_case(d)).ok_or((
                "days",
                format!("`{d}` is not a day: use mon, tue, wed, thu, fri, sat, sun"),
            ))?;
            days[i] = true;
        }
        let (start, length) = match &self.hours {
            None => (Time::MIDNIGHT, Duration::DAY),
            Some(h) => {
                let bad = || {
                    (
                        "hours",
                        format!(
                            "`{h}` is not a time range: write HH:MM-HH:MM (24-hour, e.g. 22:00-06:00)"
                        ),
                    )
                };
                let (a, b) = h.split_once('-').ok_or_else(bad)?;
                let (a, b) = (time_of(a).ok_or_else(bad)?, time_of(b).ok_or_else(bad)?);
                let mut len = b - a;
                if len <= Duration::ZERO {
                    len += Duration::DAY;
                }
                (a, len)
            }
        };
        let except = self
            .except
            .iter()
            .map(|d| {
                let fmt = time::macros::format_description!("[year]-[month]-[day]");
                Date::parse(d, fmt)
                    .map_err(|_| ("except", format!("`{d}` is not a date: write YYYY-MM-DD")))
            })
            .collect::<Result<Vec<Date>, _>>()?;
        let zone = match (&self.utc_offset, &self.time_zone) {
            (Some(_), Some(_)) => {
                return Err((
                    "time_zone",
                    "give `utc_offset` or `time_zone`, not both".into(),
                ));
            }
            (None, Some(z)) => Zone::Named(jiff::tz::TimeZone::get(z).map_err(|_| {
                (
                    "time_zone",
                    format!(
                        "`{}` is not an IANA time zone: write e.g. Europe/Paris or America/New_York",
                        z.escape_debug()
                    ),
                )
            })?),
            (None, None) => Zone::Fixed(UtcOffset::UTC),
            (Some(o), None) => Zone::Fixed({
                let fmt = time::macros::format_description!(
                    "[offset_hour sign:mandatory]:[offset_minute]"
                );
                UtcOffset::parse(o, fmt).map_err(|_| {
                    (
                        "utc_offset",
                        format!("`{o}` is not an offset: write +HH:MM or -HH:MM"),
                    )
                })?
            }),
        };
        Ok(Window {
            days,
            start,
            length,
            except,
            zone,
            text: describe(self),
        })
    }
}

fn describe(w: &RawWindow) -> String {
    let mut s = w.hours.clone().unwrap_or_else(|| "all day".into());
    if let Some(d) = &w.days {
        s.push_str(&format!(" on {}", d.join(", ")));
    }
    match &w.time_zone {
        Some(z) => s.push_str(&format!(" ({})", z.escape_debug())),
        None => s.push_str(&format!(" (UTC{})", w.utc_offset.as_deref().unwrap_or(""))),
    }
    if !w.except.is_empty() {
        s.push_str(&format!(", not on {}", w.except.join(", ")));
    }
    s
}

impl Window {
    fn opens_on(&self, d: Date) -> bool {
        self.days[d.weekday().number_days_from_monday() as usize] && !self.except.contains(&d)
    }

    /// When the window opening on `d` opens.
    fn opening(&self, d: Date) -> OffsetDateTime {
        self.zone.moment(d, self.start)
    }

    /// The local date at `t`.
    fn local_date(&self, t: OffsetDateTime) -> Date {
        t.to_offset(self.zone.offset_at(t)).date()
    }

    /// Is it open at `t`?
    pub fn open_at(&self, t: OffsetDateTime) -> bool {
        let today = self.local_date(t);
        [today.previous_day(), Some(today)]
            .into_iter()
            .flatten()
            .filter(|d| self.opens_on(*d))
            .any(|d| {
                let o = self.opening(d);
                o <= t && t < o + self.length
            })
    }

    /// When it is next open at or after `t` (within a year and a day).
    pub fn next_open(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        if self.open_at(t) {
            return Some(t);
        }
        let mut d = self.local_date(t);
        for _ in 0..=366 {
            if self.opens_on(d) && self.opening(d) > t {
                return Some(self.opening(d));
            }
            d = d.next_day()?;
        }
        None
    }

    /// Why a run may not change the cluster at `t`, and when it may: `None`
    /// while the window is open.
    pub fn closed_at(&self, t: OffsetDateTime) -> Option<String> {
        if self.open_at(t) {
            return None;
        }
        Some(match self.next_open(t) {
            Some(n) => format!(
                "outside the maintenance window ({}); it opens next at {}",
                self.text,
                n.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            ),
            None => format!(
                "outside the maintenance window ({}), which does not open within a year",
                self.text
            ),
        })
    }
}

/// Weekday helper for tests.
#[cfg(test)]
fn at(date: &str, hms: &str) -> OffsetDateTime {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(date, fmt)
        .unwrap()
        .with_time(time_of(hms).unwrap())
        .assume_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Weekday;

    fn w(days: Option<&[&str]>, hours: Option<&str>, except: &[&str]) -> Window {
        RawWindow {
            days: days.map(|d| d.iter().map(|s| s.to_string()).collect()),
            hours: hours.map(String::from),
            except: except.iter().map(|s| s.to_string()).collect(),
            utc_offset: None,
            time_zone: None,
        }
        .check()
        .unwrap()
    }

    #[test]
    fn a_night_window_wraps_midnight_and_belongs_to_the_day_it_opens() {
        // 2026-11-30 is a Monday.
        assert_eq!(at("2026-11-30", "12:00").weekday(), Weekday::Monday);
        let win = w(Some(&["mon"]), Some("22:00-06:00"), &[]);
        assert!(win.open_at(at("2026-11-30", "23:00")));
        assert!(win.open_at(at("2026-12-01", "05:59")));
        assert!(!win.open_at(at("2026-12-01", "06:00")));
        assert!(
            !win.open_at(at("2026-11-30", "05:00")),
            "Sunday night is not Monday's"
        );
        assert_eq!(
            win.next_open(at("2026-12-01", "07:00")),
            Some(at("2026-12-07", "22:00"))
        );
        assert!(
            win.closed_at(at("2026-12-01", "07:00"))
                .unwrap()
                .contains("2026-12-07T22:00:00Z")
        );
    }

    #[test]
    fn excluded_dates_and_bad_input_are_named() {
        let win = w(None, Some("09:00:00-17:00:30"), &["2026-12-24"]);
        assert!(!win.open_at(at("2026-12-24", "10:00")));
        assert!(win.open_at(at("2026-12-25", "17:00:29")));
        assert_eq!(
            win.next_open(at("2026-12-24", "10:00")),
            Some(at("2026-12-25", "09:00"))
        );
        let bad = |r: RawWindow| r.check().unwrap_err();
        let raw = RawWindow {
            days: None,
            hours: Some("9-17".into()),
            except: vec![],
            utc_offset: None,
            time_zone: None,
        };
        assert_eq!(bad(raw.clone()).0, "hours");
        assert_eq!(
            bad(RawWindow {
                days: Some(vec!["monday".into()]),
                hours: None,
                ..raw.clone()
            })
            .0,
            "days"
        );
        assert_eq!(
            bad(RawWindow {
                except: vec!["24.12.2026".into()],
                hours: None,
                ..raw.clone()
            })
            .0,
            "except"
        );
        assert_eq!(
            bad(RawWindow {
                utc_offset: Some("CET".into()),
                time_zone: None,
                hours: None,
                ..raw
            })
            .0,
            "utc_offset"
        );
    }

    #[test]
    fn an_offset_shifts_the_window() {
        let win = RawWindow {
            days: None,
            hours: Some("22:00-23:00".into()),
            except: vec![],
            utc_offset: Some("+02:00".into()),
            time_zone: None,
        }
        .check()
        .unwrap();
        assert!(win.open_at(at("2026-11-30", "20:30")));
        assert!(!win.open_at(at("2026-11-30", "22:30")));
    }

    #[test]
    fn a_named_time_zone_follows_summer_time() {
        let w = RawWindow {
            days: None,
            hours: Some("22:00-06:00".into()),
            except: vec![],
            utc_offset: None,
            time_zone: Some("Europe/Paris".into()),
        }
        .check()
        .unwrap();
        // CET (+01:00) on 28 March 2026, CEST (+02:00) from the 29th.
        assert!(w.open_at(at("2026-03-28", "21:30:00")));
        assert!(!w.open_at(at("2026-03-28", "20:30:00")));
        assert!(w.open_at(at("2026-03-29", "20:30:00")));
        assert!(!w.open_at(at("2026-03-29", "19:30:00")));
        assert_eq!(
            w.next_open(at("2026-03-29", "12:00:00")),
            Some(at("2026-03-29", "20:00:00"))
        );
        let bad = RawWindow {
            days: None,
            hours: None,
            except: vec![],
            utc_offset: None,
            time_zone: Some("Mars/Olympus".into()),
        };
        assert!(bad.check().unwrap_err().1.contains("not an IANA time zone"));
    }
}
