# Demo TaT + SoKD's DAFA (classification): the TaT run of tat.py with the teacher feature
# augmented by a policy learnt in a bi-level search during the first 60 of 300 iterations
# (search_iters ours, untuned). layer4 is 4x4 here, too small for Cutout (0.2 of the side < 1 px):
# the other eight operations, i.e. 28 sub-policies. The DistillVisualizationHook also draws the
# learnt policy (vis_data/vis_image/dafa_policy_*.png); the log prints it when the search ends.
#   python tools/train.py configs/demo/cls/tat_dafa.py   (after the teacher; or
#   python tools/demo.py --tasks cls --methods student tat tat_dafa)
_base_ = './tat.py'

model = dict(distill=[
    dict(student='backbone.layer4', teacher='backbone.layer4',
         losses=[
             dict(type='DAFADistillLoss',
                  search=dict(search_iters=60,
                              operations=['ShearX', 'ShearY', 'TranslateX', 'TranslateY',
                                          'Rotate', 'Noise', 'ChannelShuffle', 'ChannelDrop']),
                  feature_loss=dict(type='TaTLoss', student_channels=64, teacher_channels=256,
                                    query_embed='conv3x3', key_embed='identity',
                                    value_embed='conv3x3', loss_weight=0.2)),
         ]),
])
# Two optimizers: 'model' (tat.py's AdamW, student + distillation modules) and 'dafa' (Adam,
# betas (0.5, 0.999), the search parameters); the cosine schedule applies to 'model' only.
optim_wrapper = dict(constructor='DAFAOptimWrapperConstructor',
                     dafa=dict(optimizer=dict(type='Adam', lr=0.005, betas=(0.5, 0.999))))
param_scheduler = dict(_delete_=True, model={{_base_.param_scheduler}}, dafa=[])
model_wrapper_cfg = dict(type='DAFADistributedDataParallel')
