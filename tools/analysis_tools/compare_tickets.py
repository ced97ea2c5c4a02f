"""How far two unstructured tickets agree: the kept weights they share, per layer and overall.

    python tools/analysis_tools/compare_tickets.py A.pth B.pth [--out overlap.json]

Prints each layer's sparsity in both tickets, the Jaccard index of the two kept sets and the
fraction of A's kept weights that B keeps too. Used to explain benchmark results: two methods
whose tickets share nearly every weight cannot differ much downstream.
"""
import argparse
import json

from mmrecprune.cli import CLIError, check_input_file, check_output_path, run_tool
from mmrecprune.sparsity import mask_overlap, sparsity_report
from mmrecprune.tickets import load_ticket


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('ticket_a')
    parser.add_argument('ticket_b')
    parser.add_argument('--out', help='write the numbers to this JSON file (the table is '
                        'printed either way)')
    parser.add_argument('--force', action='store_true', help='overwrite --out if it exists')
    return parser.parse_args()


def main():
    args = parse_args()
    for path in (args.ticket_a, args.ticket_b):
        check_input_file(path, 'ticket')
    check_output_path(args.out, args.force, '--out')
    a, b = load_ticket(args.ticket_a), load_ticket(args.ticket_b)
    for path, ticket in ((args.ticket_a, a), (args.ticket_b, b)):
        if not ticket.masks:
            raise CLIError(f'{path} is a {ticket.kind} ticket: both tickets must be '
                           'unstructured (hold masks); a structured ticket is analysed with '
                           'tools/analysis_tools/analyze_ticket.py')
    overlap = mask_overlap(a.masks, b.masks)
    sparsity_a, sparsity_b = sparsity_report(a.masks), sparsity_report(b.masks)
    width = max(len(n) for n in overlap['layers'])
    print(f'{"layer":<{width}}  sparsity A  sparsity B  jaccard  A kept by B')
    for name, o in overlap['layers'].items():
        print(f'{name:<{width}}  {100 * sparsity_a["layers"][name]["sparsity"]:9.1f}%  '
              f'{100 * sparsity_b["layers"][name]["sparsity"]:9.1f}%  {o["jaccard"]:7.4f}  '
              f'{100 * o["shared"]:10.2f}%')
    print(f'{"overall":<{width}}  {100 * sparsity_a["sparsity"]:9.1f}%  '
          f'{100 * sparsity_b["sparsity"]:9.1f}%  {overlap["jaccard"]:7.4f}  '
          f'{100 * overlap["shared"]:10.2f}%')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(overlap, sparsity_a=sparsity_a['sparsity'],
                           sparsity_b=sparsity_b['sparsity']), f, indent=2)


if __name__ == '__main__':
    run_tool(main)
