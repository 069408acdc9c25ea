"""Stage 2, the encoders: everything that turns coordinates, images or text into GeoCLIP's 512-d
space.

The location encoder with its pretrained weights (:mod:`.location`), the open_clip CLIP tower
plus GeoCLIP's image head (:mod:`.clip`), safe image reading (:mod:`.images`), and where the
weights come from (:mod:`.weights`).
"""
