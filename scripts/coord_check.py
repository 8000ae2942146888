"""Print the μP coordinate check: mean |activation change| per layer after a few Adam steps, per width.

    .venv/bin/python scripts/coord_check.py [--widths 32 64 128 256 512] [--steps 4] [--lr 0.01]
"""

from __future__ import annotations

import argparse

from scaling_lab.model.coord_check import coord_check, slopes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args()
    for parametrization in ("standard", "mup"):
        check = coord_check(parametrization, widths=args.widths, base_width=args.widths[0], steps=args.steps,
                            lr=args.lr)
        layers = list(check[args.widths[0]])
        print(f"\n{parametrization}: mean |activation change| after {args.steps} steps at lr {args.lr}")
        print(f"{'width':>6} " + " ".join(f"{name:>9}" for name in layers))
        for width, sizes in check.items():
            print(f"{width:>6} " + " ".join(f"{sizes[name]:>9.4f}" for name in layers))
        print(f"{'slope':>6} " + " ".join(f"{s:>9.2f}" for s in slopes(check).values())
              + "   (d log|activation| / d log width; 0 = flat)")


if __name__ == "__main__":
    main()
