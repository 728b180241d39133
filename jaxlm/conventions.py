"""Names every layer shares: the special token ids (T5 convention) and the model families.

Vocabularies, objectives, models, fine-tuning and decoding read these; nothing here imports
anything, so models and objectives can share them without knowing of each other.
"""

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
# T5 reserves 100 sentinels (<extra_id_0> .. <extra_id_99>) at the top of the vocabulary.
NUM_SENTINELS = 100

FAMILIES = ("decoder", "encoder", "encoder_decoder")
