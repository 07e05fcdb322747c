//! The web console end to end: its API and security over HTTP (`api`), and its pages in
//! a real headless Chromium (`browser`).

mod api;
mod browser;
mod fixture;
