"""Target profiles as data (one TOML file per target); loaded and validated by `mlpk.packager.targets`."""
