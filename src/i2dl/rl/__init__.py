"""MIT 6.S191 Lab 3: policy gradients on CartPole and Atari Pong (REINFORCE as in the lab, PPO as the stronger agent).

`envs.py` makes the environments (with the lab's Pong preprocessing or the standard Atari one), `reinforce.py` and
`ppo.py` are one readable file per algorithm, `runs.py` holds the run folder (checkpoints, CSV/TensorBoard logs,
figures) and `cli.py` is `i2dl rl train|eval|record`.
"""
