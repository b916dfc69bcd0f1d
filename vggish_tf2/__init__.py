"""vggish-tf2: Google's VGGish audio embeddings, TF2-native."""
