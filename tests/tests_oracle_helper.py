"""A user-supplied oracle for `rlft simulate --oracle tests_oracle_helper:constant` in the tests."""


def constant(image, prompt):
    return 1.0
