# TaT on transformer tokens: ViT-B/16 -> DeiT-tiny on ImageNet (an example of token taps; not an
# experiment of the TaT paper, which distils CNNs). Paper: none. Ours: not measured.
# The student and its schedule are mmpretrain's deit-tiny_4xb256_in1k (72.13 top-1 alone, 300
# epochs, Mixup + CutMix); the teacher is mmpretrain's MAE-pre-trained ViT-B/16 fine-tuned at 224
# (82.37 top-1; class token + ViT head, like the student). Both pass 1 + 196 tokens (14x14
# patches) between their layers; `tokens=True` drops the class token and folds the patch tokens
# into a (B, C, 14, 14) map for TaT (grid and extra tokens read from each backbone). Loss weights
# are not tuned.
#   python tools/train.py configs/cls/vit-base_to_deit-tiny_in1k_tat.py
#   bash tools/dist_train.sh configs/cls/vit-base_to_deit-tiny_in1k_tat.py 4
_base_ = ['mmpretrain::deit/deit-tiny_4xb256_in1k.py']
custom_imports = dict(imports=['tat_mm'], allow_failed_imports=False)

# A typed preprocessor: the runner hands the top-level one to the model (here the student).
data_preprocessor = dict(type='mmpretrain.ClsDataPreprocessor')

model = dict(
    _delete_=True,
    type='ClsDistiller',
    student=_base_.model,
    # mmpretrain model zoo: vit-base-p16_32xb128-mae_in1k (configs/vision_transformer/metafile.yml).
    teacher=dict(
        config='mmpretrain::vision_transformer/vit-base-p16_32xb128-mae_in1k.py',
        checkpoint='https://download.openmmlab.com/mmclassification/v0/vit/'
        'vit-base-p16_pt-32xb128-mae_in1k_20220623-4c544545.pth'),
    distill=[
        # The last transformer layer of each: (B, 197, 192) / (B, 197, 768) tokens.
        dict(student='backbone.layers.11', teacher='backbone.layers.11', tokens=True,
             losses=[
                 dict(type='TaTLoss', student_channels=192, teacher_channels=768,
                      loss_weight=0.2),
             ]),
        # Logit KD: the student's classifier layer against the teacher's.
        dict(student='head.layers.head', teacher='head.layers.head',
             losses=[dict(type='KDLoss', temperature=1.0, loss_weight=1.0)]),
    ])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
