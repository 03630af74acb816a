"""The 19 CelebAMask-HQ classes (index = class id) and a colour palette to view them."""

CLASS_NAMES = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow",
    "l_ear", "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l",
    "neck", "cloth",
)
NUM_CLASSES = len(CLASS_NAMES)
CLASS_ID = {name: i for i, name in enumerate(CLASS_NAMES)}

BACKGROUND, SKIN, NOSE, EYE_G, L_EYE, R_EYE, L_BROW, R_BROW = range(8)
L_EAR, R_EAR, MOUTH, U_LIP, L_LIP, HAIR, HAT, EAR_R, NECK_L, NECK, CLOTH = range(8, 19)

#: RGB colour per class id, for palette PNGs and overlays.
PALETTE = (
    (0, 0, 0), (204, 0, 0), (76, 153, 0), (204, 204, 0), (51, 51, 255), (204, 0, 204),
    (0, 255, 255), (255, 204, 204), (102, 51, 0), (255, 0, 0), (102, 204, 0),
    (255, 255, 0), (0, 0, 153), (0, 0, 204), (255, 51, 153), (0, 204, 204),
    (0, 51, 0), (255, 153, 51), (0, 204, 0),
)
assert len(PALETTE) == NUM_CLASSES
