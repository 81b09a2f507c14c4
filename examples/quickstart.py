"""Minimal attention-sampling run on generated data (no download).

The label of each 64x64 noise image is the colour of one small square, so
only a few pixels carry it. The model reads an 8x8 attention map and looks at
4 patches of 16x16; after two epochs it finds the square.

    python examples/quickstart.py
"""

import numpy as np

import keras_attention_sampling as kas


def square_images(n, size=64, square=8, seed=0):
    rng = np.random.default_rng(seed)
    images = (rng.random((n, size, size, 3)) * 0.5 + 0.25).astype("float32")
    labels = rng.integers(0, 3, n)
    for image, label in zip(images, labels):
        top, left = rng.integers(0, size - square + 1, 2)
        image[top : top + square, left : left + square] = np.eye(3)[label]
    return images, labels


def main():
    x_train, y_train = square_images(1024)
    x_test, y_test = square_images(256, seed=1)
    model = kas.AttentionSamplingModel(
        num_classes=3, scale=8, n_patches=4, patch_size=16, entropy_weight=0.01, seed=0
    )
    model.compile(metrics=["accuracy"])
    model.fit(
        x_train, y_train, batch_size=16, epochs=2, validation_data=(x_test, y_test)
    )
    accuracy = np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test)
    print(f"test accuracy {accuracy:.3f} (chance 0.333)")


if __name__ == "__main__":
    main()
