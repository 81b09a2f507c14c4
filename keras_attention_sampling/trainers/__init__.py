"""Per-backend gradient plumbing of the policy-gradient `train_step`.

Each module differentiates the loss returned by
`PolicyGradientMixin.policy_step` in its backend's own way and applies the
gradients; none of them contains any of the method's maths.
"""
