# Common tasks (https://github.com/casey/just: `cargo install just`). Each recipe is one plain
# cargo command, so reading this file is enough to run them without just.

config := "configs/quickstart.toml"

# Train (and evaluate) from a config: `just train configs/quickstart.toml --set seed=1`
train cfg=config *args:
    cargo run -p oodforge-cli --bin train -- --config {{cfg}} {{args}}

# Print the fully resolved config without training.
dry-run cfg=config *args:
    cargo run -p oodforge-cli --bin train -- --config {{cfg}} --dry-run {{args}}

# Continue a stopped run.
resume dir:
    cargo run -p oodforge-cli --bin train -- --resume {{dir}}

# Evaluate the last checkpoint of a run.
eval dir *args:
    cargo run -p oodforge-cli --bin eval -- --run {{dir}} {{args}}

# The test suite (what CI runs).
test:
    cargo test --workspace

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Everything CI does, including installing Mesa's software Vulkan driver.
ci:
    bash .ci/run
