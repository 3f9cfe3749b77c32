"""Block configurations: one frozen, validated dataclass per block."""
