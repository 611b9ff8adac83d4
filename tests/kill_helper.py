"""Run run_qa.py and kill -9 the process at a chosen moment (tests only):

    python tests/kill_helper.py checkpoint:10 -- <run_qa arguments>   # inside the checkpoint of step 10,
                                                                      # after its weights, before its optimizer
    python tests/kill_helper.py final -- ...                          # inside the final save, after the weights
    python tests/kill_helper.py time:4.5 -- ...                       # 4.5 s after start, wherever it is
"""

import os
import signal
import sys
import threading

from transformers import Trainer


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def main():
    point, args = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
    kind, _, value = point.partition(":")
    if kind == "checkpoint":
        original = Trainer._save_optimizer_and_scheduler

        def save_then_die(self, output_dir):
            if self.state.global_step == int(value):
                die()
            return original(self, output_dir)

        Trainer._save_optimizer_and_scheduler = save_then_die
    elif kind == "final":
        original = Trainer._save

        def save_then_die(self, output_dir=None, state_dict=None):
            original(self, output_dir, state_dict)
            if os.path.abspath(output_dir or self.args.output_dir) == os.path.abspath(self.args.output_dir):
                die()

        Trainer._save = save_then_die
    elif kind == "time":
        threading.Timer(float(value), die).start()
    from hf_ft.config.arguments import parse_args
    from hf_ft.core.errors import run_user_errors
    from hf_ft.training.run import train

    run_user_errors(lambda: train(parse_args(args)))


if __name__ == "__main__":
    main()
