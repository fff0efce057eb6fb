# FC-DenseNet67 on CamVid, first stage: 224x224 crops (Jegou et al. 2017, Table 2).
_base_ = ["../_base_/datasets/camvid.py", "../_base_/schedules/fc_densenet_rmsprop.py"]

model = dict(type="fc_densenet67")
