from medxgan import MedXGAN
from medxgan.data import load_image_tensor

mx = MedXGAN.load("runs/gan", steps=100)            # the stored MONAI weights, prob1, 96 px RGB ImageNet normalisation
print(mx.classifier.name, "|", mx.classifier.output, "|", mx.classifier.target_description())
x = load_image_tensor("data/brain/test/positive/brain_00341.png", size=64, channels=1).reshape(1, 1, 64, 64)
r = mx.explain(x)[0]
print(f"p(input) {r.prob_input:.3f}  p(residual) {r.prob_residual:.3f}  PSNR {r.psnr:.1f} dB")
