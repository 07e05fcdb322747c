# Recipes for people who have `just`; each one is a plain command you can run without it.

# Run the demo (builds snakepit, calls the example plugins).
demo:
    bash scripts/demo.sh

# Run every test (Rust + pytest for the shim, both codecs).
test:
    bash scripts/test.sh

# Lints: formatting and clippy with warnings denied.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# The comparison benchmarks: baselines and snakepit in one run, one table.
bench:
    cargo run --release -p snakepit-benches --bin compare
