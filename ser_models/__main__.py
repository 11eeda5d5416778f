"""python -m ser_models list: every registered model with its ablations, inputs and parameter count."""
from __future__ import annotations

import sys

from .cli import Parser, leave
from .registry import INPUTS, all_models


def rows(vocab_size: int = 2):
    for name, spec in all_models().items():
        for ablation in spec.ablation_names:
            config = spec.config(ablation.replace("<k>", "0"), vocab_size=vocab_size, **spec.listing)
            yield {"model": name, "paper": spec.paper, "ablation": ablation, "inputs": ", ".join(spec.inputs(config)),
                   "params": None if "encoder" in spec.defaults else trainable(spec.builder(config))}


def trainable(model) -> int:
    """Trainable parameters without word-embedding tables."""
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return count - sum(m.weight.numel() for m in model.modules()
                       if type(m).__name__ == "Embedding" and m.weight.requires_grad)


def shown(params: int | None) -> str:
    return "checkpoint's" if params is None else f"{params:,}"   # a model around the sweep's encoder checkpoint


def main(argv=None) -> int:
    parser = Parser(prog=sys.argv[0] if sys.argv[0].startswith("emosweep") else "python -m ser_models",
                    description=__doc__)
    parser.add_argument("command", choices=["list"])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    table = list(rows())
    if args.markdown:
        print("| model | paper | ablation | inputs | parameters |\n|---|---|---|---|---:|")
        for row in table:
            print(f"| {row['model']} | {row['paper']} | {row['ablation']} | {row['inputs']} | {shown(row['params'])} |")
    else:
        print(f"{'model':16s} {'paper':13s} {'ablation':26s} {'parameters':>12s}  inputs")
        for row in table:
            print(f"{row['model']:16s} {row['paper']:13s} {row['ablation']:26s} {shown(row['params']):>12s}  "
                  f"{row['inputs']}")
        print("\nparameters: trainable, without word-embedding tables (their size depends on the vocabulary);\n"
              "checkpoint's: the head and the encoder layers it trains, which depend on the sweep's checkpoint")
        print("recipes (a sweep file's train: keys override them):")
        for name, spec in all_models().items():
            print(f"  {name:16s} {spec.recipe}\n  {'':16s} from {spec.recipe_source}")
        print("inputs:")
        for name, meaning in INPUTS.items():
            print(f"  {name:14s} {meaning}")
    print("\nDED (ser_models/ded.py, the SincNet+DED paper): dialog emotion decoding over any model's test "
          "posteriors,\nadded to every sweep on a corpus with dialogs as rows named <model>+ded (no training)")
    return 0


if __name__ == "__main__":
    leave(main())
